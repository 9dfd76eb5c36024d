from django.urls import include, path

from chat import proxy
from chat import views as chat_views
from news import views

urlpatterns = [
    path("news/", views.publish_news),
    path("healthz", views.healthz),
    # the session login: Django's own views and the page that chats with no JWT
    path("accounts/", include("django.contrib.auth.urls")),
    path("", chat_views.chat_page, name="chat"),
    # Herald's proxy calls (chat/proxy.py): Herald POSTs here directly, never
    # through nginx (which answers 404 for /herald/)
    path("herald/connect", proxy.connect),
    path("herald/refresh", proxy.refresh),
    path("herald/subscribe", proxy.subscribe),
    path("herald/rpc", proxy.rpc),
]
