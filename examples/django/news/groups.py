def herald_group(channel):
    """Herald channel -> Django group name: "chat:lobby" is group "chat..lobby"
    (Django group names cannot hold ":")."""
    return channel.replace(":", "..")
