"""Settings of a minimal Django project whose Channels code drives Herald.

What Herald needs is marked HERALD: the channel layer on the Redis Herald
uses, Herald's JWT secret (to mint tokens, for clients that use them), and
for the session login - sockets authenticated by Django's own session
cookie, no JWT anywhere - the key Herald sends with its proxy calls.
"""
import os
import sys
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent

# herald_client (clients/python of this clone) when it is not installed: the
# chat app's proxy views import it, so every manage.py command needs it
try:
    import herald_client  # noqa: F401
except ImportError:
    sys.path.append(str(BASE_DIR.parent.parent / "clients" / "python"))
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "dev-only-not-a-secret")
DEBUG = os.environ.get("DJANGO_DEBUG", "1") == "1"
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]

INSTALLED_APPS = [
    "django.contrib.auth",  # users, groups and the login form
    "django.contrib.contenttypes",
    "django.contrib.sessions",  # the session cookie the sockets are authenticated with
    "channels",  # channel layers, runworker
    "news",
    "chat",
]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
]
TEMPLATES = [{
    "BACKEND": "django.template.backends.django.DjangoTemplates",
    "APP_DIRS": True,
    "OPTIONS": {"context_processors": ["django.template.context_processors.request",
                                       "django.contrib.auth.context_processors.auth"]},
}]
ROOT_URLCONF = "mysite.urls"
WSGI_APPLICATION = "mysite.wsgi.application"
ASGI_APPLICATION = "mysite.asgi.application"  # what `manage.py runworker` runs
# users and sessions; run.sh keeps the file in its throwaway directory
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3",
                         "NAME": os.environ.get("DJANGO_DB", str(BASE_DIR / "db.sqlite3"))}}
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
USE_TZ = True
LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/accounts/login/"

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

# HERALD: the session login (chat/). Herald calls the views of chat/proxy.py
# (HERALD_PROXY_CONNECT_URL, ...) with this key in X-Herald-Proxy-Key
# (Herald's HERALD_PROXY_KEY) and the browser's Cookie header.
HERALD_PROXY_KEY = os.environ.get("HERALD_PROXY_KEY", "")
# How long Herald trusts a session before it asks the refresh view again
# (a logged-out session's sockets close with 4001 within this time).
HERALD_SESSION_CHECK = int(os.environ.get("HERALD_SESSION_CHECK", "60"))
# The origins whose pages may open session sockets (the site behind nginx):
# the connect view refuses others, so a page of another site the browser
# sends the cookie from cannot use the session. Empty: no check.
SITE_ORIGINS = [o for o in os.environ.get("SITE_ORIGINS", "").split(",") if o]

LOGGING = {
    "version": 1,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"news": {"handlers": ["console"], "level": "INFO", "propagate": False},
                "chat": {"handlers": ["console"], "level": "INFO", "propagate": False}},
}
