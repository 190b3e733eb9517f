"""The message API: thin views that validate, call one service and serialise."""

import hashlib
import json

from django.conf import settings
from django.db import IntegrityError, transaction
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import APIException
from rest_framework.pagination import CursorPagination
from rest_framework.response import Response

from messaging.api import ratelimit
from messaging.api.filters import MessageFilter
from messaging.api.serializers import (
    MessageCreateSerializer,
    MessageDetailSerializer,
    MessageSerializer,
    ResendSerializer,
)
from messaging.models import Client, IdempotencyKey, Message, Source
from messaging.services import messages


def _client_for(user) -> Client:
    """Transitional, until API keys replace per-user tokens: one client per token user."""
    client, _ = Client.objects.get_or_create(
        slug=f"user-{user.pk}", defaults={"name": user.get_username()}
    )
    return client


class IdempotencyConflict(APIException):
    status_code = 409
    default_code = "idempotency_conflict"
    default_detail = "This Idempotency-Key was used with a different request body."


class MessagePagination(CursorPagination):
    ordering = "-created_at"
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500


IDEMPOTENCY_HEADER = OpenApiParameter(
    "Idempotency-Key",
    location=OpenApiParameter.HEADER,
    required=False,
    description="Repeat a create safely: the same key and body return the original message "
    "(200); the same key with another body is refused (409).",
)


class MessageViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    queryset = Message.objects.all()
    pagination_class = MessagePagination
    filterset_class = MessageFilter

    def get_queryset(self):
        queryset = Message.objects.prefetch_related("parts", "resends")
        if self.action == "retrieve":
            queryset = queryset.prefetch_related("events__actor")
        return queryset

    def get_serializer_class(self):
        return {
            "create": MessageCreateSerializer,
            "retrieve": MessageDetailSerializer,
            "resend": ResendSerializer,
        }.get(self.action, MessageSerializer)

    def initial(self, request, *args, **kwargs):
        # Before authentication, so that floods of bad or missing tokens are limited too.
        ratelimit.enforce(request, "api", settings.API_RATE_LIMIT)
        if request.method == "POST":
            ratelimit.enforce(request, "api-send", settings.API_SEND_RATE_LIMIT)
        super().initial(request, *args, **kwargs)

    @extend_schema(
        request=MessageCreateSerializer,
        responses={200: MessageDetailSerializer, 202: MessageDetailSerializer},
        parameters=[IDEMPOTENCY_HEADER],
    )
    def create(self, request):
        serializer = MessageCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        key = request.headers.get("Idempotency-Key", "").strip()
        fingerprint = hashlib.sha256(
            json.dumps(request.data, sort_keys=True, default=str).encode()
        ).hexdigest()
        if key:
            existing = self._replay(request.user, key, fingerprint)
            if existing:
                return existing
        try:
            with transaction.atomic():
                message = messages.create_outbound(
                    to=data["to"],
                    body=data["body"],
                    provider=data.get("provider", ""),
                    sender=data.get("from", ""),
                    client_reference=data.get("client_reference", ""),
                    send_at=data.get("send_at"),
                    metadata=data.get("metadata"),
                    callback_url=data.get("callback_url", ""),
                    source=Source.API,
                    client=_client_for(request.user),
                    actor=request.user,
                )
                if key:
                    IdempotencyKey.objects.create(
                        client=message.client,
                        key=key[:255],
                        fingerprint=fingerprint,
                        message=message,
                    )
        except IntegrityError:  # a concurrent request with the same key won the race
            existing = self._replay(request.user, key, fingerprint)
            if existing:
                return existing
            raise
        return Response(MessageDetailSerializer(message).data, status=status.HTTP_202_ACCEPTED)

    def _replay(self, user, key, fingerprint):
        stored = (
            IdempotencyKey.objects.select_related("message")
            .filter(client=_client_for(user), key=key[:255])
            .first()
        )
        if stored is None:
            return None
        if stored.fingerprint != fingerprint:
            raise IdempotencyConflict()
        response = Response(MessageDetailSerializer(stored.message).data, status=status.HTTP_200_OK)
        response["Idempotent-Replayed"] = "true"
        return response

    @extend_schema(request=ResendSerializer, responses={202: MessageDetailSerializer})
    @action(detail=True, methods=["post"])
    def resend(self, request, pk=None):
        original = self.get_object()
        serializer = ResendSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        new = messages.resend(
            original,
            source=Source.API,
            actor=request.user,
            provider=serializer.validated_data.get("provider", ""),
            reason=serializer.validated_data.get("reason", ""),
        )
        return Response(MessageDetailSerializer(new).data, status=status.HTTP_202_ACCEPTED)
