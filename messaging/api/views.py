"""The message API: thin views that validate, call one service and serialise.

Every view is a ClientScopedViewSet: its rows come from a selector that takes the caller's
client, and subclasses cannot replace that (see ClientScopedViewSet), so another client's id is
a 404 by construction.
"""

import hashlib
import json

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.pagination import CursorPagination
from rest_framework.response import Response

from messaging import selectors
from messaging.api import ratelimit
from messaging.api.filters import MessageFilter
from messaging.api.serializers import (
    MessageCreateSerializer,
    MessageDetailSerializer,
    MessageSerializer,
    ResendSerializer,
)
from messaging.models import ApiKey, Message, Source
from messaging.services import messages


class ClientScopedViewSet(viewsets.GenericViewSet):
    """A viewset whose every queryset is `selector(caller's client)`.

    Subclasses name a `model` and a `selector` (a function of the client) and may narrow or
    prefetch in `refine_queryset`; defining `queryset`, `get_queryset` or `get_object` is a
    TypeError at import time, so no view can read rows outside the caller's client. Requests
    also pass the per-client rate limits (messaging/api/ratelimit.py) before anything else."""

    model = None
    selector = None

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        overridden = {"get_queryset", "get_object"} & set(cls.__dict__)
        if overridden or cls.__dict__.get("queryset") is not None:
            raise TypeError(
                f"{cls.__name__} must scope through `selector` and `refine_queryset`, "
                "not `queryset`, `get_queryset` or `get_object`."
            )

    @property
    def api_key(self) -> ApiKey | None:
        auth = getattr(self.request, "auth", None)
        return auth if isinstance(auth, ApiKey) else None

    @property
    def client(self):
        return self.api_key.client if self.api_key else None

    def initial(self, request, *args, **kwargs):
        ratelimit.enforce(request)
        super().initial(request, *args, **kwargs)

    def get_queryset(self):
        if self.client is None:
            # Only reached without a key by schema generation (requests without one are a 401
            # before any view code runs): nothing to show.
            return self.model.objects.none()
        return self.refine_queryset(type(self).selector(self.client))

    def refine_queryset(self, queryset):
        """Narrow or prefetch; never widen."""
        return queryset


class MessagePagination(CursorPagination):
    ordering = "-created_at"
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500


IDEMPOTENCY_HEADER = OpenApiParameter(
    "Idempotency-Key",
    location=OpenApiParameter.HEADER,
    required=False,
    description="Repeat a request safely: the same key and body return the original message "
    "(200); the same key with another body is refused (409). Keys are per client.",
)


def fingerprint(data, *scope) -> str:
    """The canonical request an Idempotency-Key stands for: the body, and for a resend which
    message it resends (a create's fingerprint is the body alone, as keys stored before resends
    had keys were computed)."""
    canonical = [*scope, data] if scope else data
    return hashlib.sha256(json.dumps(canonical, sort_keys=True, default=str).encode()).hexdigest()


def created(message, replayed: bool) -> Response:
    if replayed:
        response = Response(MessageDetailSerializer(message).data, status=status.HTTP_200_OK)
        response["Idempotent-Replayed"] = "true"
        return response
    return Response(MessageDetailSerializer(message).data, status=status.HTTP_202_ACCEPTED)


class MessageViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, ClientScopedViewSet):
    model = Message
    selector = staticmethod(selectors.messages_for)
    pagination_class = MessagePagination
    filterset_class = MessageFilter

    def refine_queryset(self, queryset):
        queryset = queryset.prefetch_related("parts", "resends")
        if self.action == "retrieve":
            queryset = queryset.prefetch_related("events__actor")
        return queryset

    def get_serializer_class(self):
        return {
            "create": MessageCreateSerializer,
            "retrieve": MessageDetailSerializer,
            "resend": ResendSerializer,
        }.get(self.action, MessageSerializer)

    @extend_schema(
        request=MessageCreateSerializer,
        responses={200: MessageDetailSerializer, 202: MessageDetailSerializer},
        parameters=[IDEMPOTENCY_HEADER],
    )
    def create(self, request):
        serializer = MessageCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        message, replayed = messages.idempotent(
            self.client,
            request.headers.get("Idempotency-Key", "").strip(),
            fingerprint(request.data),
            lambda: messages.create_outbound(
                to=data["to"],
                body=data["body"],
                provider=data.get("provider", ""),
                sender=data.get("from", ""),
                client_reference=data.get("client_reference", ""),
                send_at=data.get("send_at"),
                metadata=data.get("metadata"),
                source=Source.API,
                client=self.client,
                api_key=self.api_key,
            ),
        )
        return created(message, replayed)

    @extend_schema(
        request=ResendSerializer,
        responses={200: MessageDetailSerializer, 202: MessageDetailSerializer},
        parameters=[IDEMPOTENCY_HEADER],
    )
    @action(detail=True, methods=["post"])
    def resend(self, request, pk=None):
        original = self.get_object()
        serializer = ResendSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        message, replayed = messages.idempotent(
            self.client,
            request.headers.get("Idempotency-Key", "").strip(),
            fingerprint(request.data, "resend", str(original.pk)),
            lambda: messages.resend(
                original,
                source=Source.API,
                api_key=self.api_key,
                provider=data.get("provider", ""),
                reason=data.get("reason", ""),
            ),
        )
        return created(message, replayed)
