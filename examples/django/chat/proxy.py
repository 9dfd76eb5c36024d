"""Herald's proxy calls, answered by ordinary Django views.

Herald is started with HERALD_PROXY_CONNECT_URL=.../herald/connect (and
refresh, subscribe, rpc). A browser opens its socket with no token at all;
Herald POSTs the handshake's Cookie header here, so Django's session and
authentication middleware give these views the browser's `request.user`,
exactly as for a page. `herald_client.proxy.django_view` checks Herald's
key (X-Herald-Proxy-Key), parses the call and sends the answer; raising
ProxyError refuses (the browser gets that error code). See docs/proxy.md for
every call and answer.

Which identity counts: `call.user` is who Herald authenticated the
connection as (here, by the connect view below); the cookie is the one of the
socket's handshake. The subscribe and rpc views authorize `call.user`, so they
hold for sockets that connected with a JWT too; the refresh view asks whether
the handshake's session still stands.
"""
import logging
import time

from django.conf import settings
from django.contrib.auth import get_user_model

from herald_client.proxy import (ProxyError, connect_result, django_view, refresh_expired,
                                 refresh_result, rpc_result, subscribe_result)

log = logging.getLogger(__name__)
KEY = settings.HERALD_PROXY_KEY


def _session_expiry():
    """When Herald asks again (the refresh view) whether the session stands."""
    return int(time.time()) + settings.HERALD_SESSION_CHECK


@django_view("connect", key=KEY)
def connect(request, call):
    """A socket without a JWT: who is it? The logged-in user, by the session
    cookie. Subscribed at once (server-side) to its personal channel."""
    origin = request.headers.get("Origin")
    if settings.SITE_ORIGINS and origin not in settings.SITE_ORIGINS:
        # the browser sends the cookie with sockets that pages of other
        # origins open: only the site's own pages may use the session
        raise ProxyError("forbidden", "sockets of this site only")
    if not request.user.is_authenticated:
        raise ProxyError("unauthorized", "log in first")
    name = request.user.get_username()
    log.info("herald connect %s as %s (%s)", call.client, name, call.remote_addr)
    return connect_result(name, expire_at=_session_expiry(),
                          info={"name": request.user.get_full_name() or name},
                          channels=["user:" + name])


@django_view("refresh", key=KEY)
def refresh(request, call):
    """Before the expire_at given at connect: does the session still stand?
    Logged out (the session is gone) or another user now: close 4001."""
    if not request.user.is_authenticated or request.user.get_username() != call.user:
        return refresh_expired()
    return refresh_result(_session_expiry())


def _user(call):
    if call.user is None:
        raise ProxyError("unauthorized", "log in first")
    user = get_user_model().objects.filter(username=call.user, is_active=True).first()
    if user is None:
        raise ProxyError("forbidden", "no such user")
    return user


@django_view("subscribe", key=KEY)
def subscribe(request, call):
    """Namespace "team" has "subscribe_proxy": true (herald.json): team:NAME
    is for the members of the Django group NAME."""
    user = _user(call)
    _, _, team = call.channel.partition(":")
    if not user.groups.filter(name=team).exists():
        raise ProxyError("forbidden", "only members of team %s" % team)
    return subscribe_result()


@django_view("rpc", key=KEY)
def rpc(request, call):
    """h.rpc(method, data) in the browser lands here."""
    user = _user(call)
    if call.method == "whoami":
        return rpc_result({"username": user.get_username(), "staff": user.is_staff,
                           "teams": sorted(user.groups.values_list("name", flat=True))})
    raise ProxyError("not_found", "no method %s" % call.method)
