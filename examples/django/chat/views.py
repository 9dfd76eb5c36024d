"""The chat page: Django's login protects it; its socket needs no token."""
from django.contrib.auth.decorators import login_required
from django.shortcuts import render


@login_required
def chat_page(request):
    return render(request, "chat/index.html")
