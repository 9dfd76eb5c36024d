"""Settings of a minimal Django project whose Channels code drives Herald.

The two things Herald needs are marked HERALD: the channel layer on the Redis
Herald uses, and (to mint tokens for browsers) Herald's JWT secret.
"""
import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "dev-only-not-a-secret")
DEBUG = os.environ.get("DJANGO_DEBUG", "1") == "1"
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]

INSTALLED_APPS = [
    "channels",  # channel layers, runworker
    "news",
]
MIDDLEWARE = ["django.middleware.common.CommonMiddleware"]
ROOT_URLCONF = "mysite.urls"
WSGI_APPLICATION = "mysite.wsgi.application"
ASGI_APPLICATION = "mysite.asgi.application"  # what `manage.py runworker` runs
DATABASES = {}  # this example stores nothing
USE_TZ = True

# HERALD: the channel layer, on the Redis server (and database number) Herald
# uses as HERALD_REDIS_URL. Herald is started with HERALD_DJANGO_CHANNELS=redis
# for RedisChannelLayer, =pubsub for RedisPubSubChannelLayer. No
# "symmetric_encryption_keys": Herald cannot read encrypted layers.
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
LAYERS = {"redis": "channels_redis.core.RedisChannelLayer",
          "pubsub": "channels_redis.pubsub.RedisPubSubChannelLayer"}
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": LAYERS[os.environ.get("DJANGO_CHANNEL_LAYER", "redis")],
        "CONFIG": {"hosts": [REDIS_URL]},
    },
}

# HERALD: the secret Herald verifies tokens with (HERALD_JWT_SECRET), for
# `manage.py herald_token`; the project never needs Herald's API key.
HERALD_JWT_SECRET = os.environ.get("HERALD_JWT_SECRET", "")

LOGGING = {
    "version": 1,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"news": {"handlers": ["console"], "level": "INFO"}},
}
