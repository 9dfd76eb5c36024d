"""Ordinary Django Channels code: nothing here knows about Herald."""
import json

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.http import JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST


@csrf_exempt  # an API for the example's curl; protect it as your project protects its views
@require_POST
def publish_news(request):
    """POST /news/ {"title": ...}: every subscriber of channel "news" gets it."""
    try:
        title = json.loads(request.body)["title"]
    except (ValueError, KeyError, TypeError):
        return JsonResponse({"error": 'send {"title": "..."}'}, status=400)
    async_to_sync(get_channel_layer().group_send)("news", {"type": "news.item", "title": title})
    return JsonResponse({"sent": True})


def healthz(request):
    return JsonResponse({"status": "ok"})
