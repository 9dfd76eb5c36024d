from django.urls import path

from news import views

urlpatterns = [
    path("news/", views.publish_news),
    path("healthz", views.healthz),
]
