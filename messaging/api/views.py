"""The message API: thin views that validate, call one service and serialise. Errors are
problem documents (messaging/api/problems.py); the schema's common answers are
messaging/api/schema.py.

Every view is a ClientScopedViewSet: its rows come from a selector that takes the caller's
client, and subclasses cannot replace that (see ClientScopedViewSet), so another client's id is
a 404 by construction.
"""

from drf_spectacular.utils import extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.pagination import CursorPagination
from rest_framework.response import Response

from messaging import selectors
from messaging.api import ratelimit, schema
from messaging.api.filters import MessageFilter
from messaging.api.problems import field_errors
from messaging.api.serializers import (
    BatchCreateSerializer,
    CancelSerializer,
    MessageDetailSerializer,
    MessageInputSerializer,
    MessageSerializer,
    QuoteSerializer,
    ResendSerializer,
)
from messaging.models import ApiKey, Message, Source
from messaging.services import batches, idempotency, messages, quotes


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

    def finalize_response(self, request, response, *args, **kwargs):
        response = super().finalize_response(request, response, *args, **kwargs)
        ratelimit.add_headers(response, getattr(request, "rate_limit_usage", None))
        return response

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

    def decode_cursor(self, request):
        # DRF answers a cursor it cannot read with 404; it is a bad parameter, not a missing page.
        try:
            return super().decode_cursor(request)
        except NotFound:
            raise ValidationError(
                {"cursor": ["Not a cursor this API gave: follow `next`."]}
            ) from None


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
        if self.action in ("retrieve", "cancel"):
            queryset = queryset.prefetch_related("events__actor")
        return queryset

    def get_serializer_class(self):
        return {
            "create": MessageInputSerializer,
            "quote": MessageInputSerializer,
            "batch": BatchCreateSerializer,
            "retrieve": MessageDetailSerializer,
            "resend": ResendSerializer,
            "cancel": CancelSerializer,
        }.get(self.action, MessageSerializer)

    def _input(self, serializer_class, request):
        serializer = serializer_class(data=request.data)
        serializer.is_valid(raise_exception=True)
        return serializer.validated_data

    @extend_schema(
        request=MessageInputSerializer,
        responses=schema.responses(
            {200: MessageDetailSerializer, 202: MessageDetailSerializer}, 400, 409, 422
        ),
        parameters=[schema.IDEMPOTENCY_HEADER],
        examples=schema.SEND_EXAMPLES,
        description="Queue one message. 202 with the message; 200 with the original message "
        "when the same Idempotency-Key and body were sent before.",
    )
    def create(self, request):
        key = idempotency.clean_key(request.headers.get("Idempotency-Key"))
        data = self._input(MessageInputSerializer, request)
        message, replayed = idempotency.run(
            self.client,
            key,
            idempotency.fingerprint(request.data),
            lambda: messages.create_outbound(
                to=data["to"],
                body=data["body"],
                provider=data.get("provider", ""),
                sender=data.get("from", ""),
                client_reference=data.get("client_reference", ""),
                send_at=data.get("send_at"),
                metadata=data.get("metadata"),
                callback_url=data.get("callback_url", ""),
                source=Source.API,
                client=self.client,
                api_key=self.api_key,
            ),
        )
        return created(message, replayed)

    @extend_schema(
        request=MessageInputSerializer,
        responses=schema.responses({200: QuoteSerializer}, 400),
        description="What this send would be, without sending it: segments, encoding, the "
        "characters that force UCS-2, the provider, and an estimated price when SMS_PRICES "
        "has one. Takes exactly what a send takes.",
    )
    @action(detail=False, methods=["post"])
    def quote(self, request):
        data = self._input(MessageInputSerializer, request)
        result = quotes.quote(
            to=data["to"],
            body=data["body"],
            provider=data.get("provider", ""),
            client=self.client,
            api_key=self.api_key,
        )
        return Response(QuoteSerializer(result.as_dict()).data)

    @extend_schema(
        request=BatchCreateSerializer,
        responses=schema.responses(
            {200: schema.BatchResultSerializer, 202: schema.BatchResultSerializer}, 400, 409
        ),
        parameters=[schema.IDEMPOTENCY_HEADER],
        examples=schema.BATCH_EXAMPLES,
        description="One text to up to 1,000 recipients, created in one transaction. Invalid "
        "recipients are reported by index (`#/recipients/3/to`): without `partial` nothing is "
        "created; with it the valid ones are. Opted-out recipients are listed, not sent.",
    )
    @action(detail=False, methods=["post"])
    def batch(self, request):
        key = idempotency.clean_key(request.headers.get("Idempotency-Key"))
        data = self._input(BatchCreateSerializer, request)
        valid, invalid = batches.check_recipients(data["recipients"], data["body"])
        if invalid and (not data["partial"] or not valid):
            raise ValidationError({"recipients": invalid})
        errors = {i: field_errors(e, f"#/recipients/{i}") for i, e in invalid.items()}
        batch, replayed = idempotency.run(
            self.client,
            key,
            idempotency.fingerprint(request.data),
            lambda: batches.create_batch(
                client=self.client,
                api_key=self.api_key,
                recipients=valid,
                invalid=errors,
                provider=data.get("provider", ""),
                sender=data.get("from", ""),
                send_at=data.get("send_at"),
                metadata=data.get("metadata"),
                callback_url=data.get("callback_url", ""),
            ),
        )
        response = Response(batch.result, status=200 if replayed else 202)
        if replayed:
            response["Idempotent-Replayed"] = "true"
        return response

    @extend_schema(
        request=ResendSerializer,
        responses=schema.responses(
            {200: MessageDetailSerializer, 202: MessageDetailSerializer}, 400, 404, 409
        ),
        parameters=[schema.IDEMPOTENCY_HEADER],
    )
    @action(detail=True, methods=["post"])
    def resend(self, request, pk=None):
        key = idempotency.clean_key(request.headers.get("Idempotency-Key"))
        original = self.get_object()
        data = self._input(ResendSerializer, request)
        message, replayed = idempotency.run(
            self.client,
            key,
            idempotency.fingerprint(request.data, "resend", str(original.pk)),
            lambda: messages.resend(
                original,
                source=Source.API,
                api_key=self.api_key,
                provider=data.get("provider", ""),
                reason=data.get("reason", ""),
                # An API client may resend a message more than once on purpose; a retried
                # request is what must not double, and that is the Idempotency-Key's job.
                repeat=True,
            ),
        )
        return created(message, replayed)

    @extend_schema(
        request=CancelSerializer,
        responses=schema.responses({200: MessageDetailSerializer}, 400, 404, 409),
        description="Cancel a queued or scheduled message before it is sent; 409 once the "
        "sender has it (or it is final).",
    )
    @action(detail=True, methods=["post"])
    def cancel(self, request, pk=None):
        message = self.get_object()
        data = self._input(CancelSerializer, request)
        messages.cancel(message, source=Source.API, reason=data.get("reason", ""))
        return Response(MessageDetailSerializer(self.get_object()).data)

    @extend_schema(responses=schema.responses({200: MessageSerializer(many=True)}, 400))
    def list(self, request, *args, **kwargs):
        return super().list(request, *args, **kwargs)

    @extend_schema(responses=schema.responses({200: MessageDetailSerializer}, 404))
    def retrieve(self, request, *args, **kwargs):
        return super().retrieve(request, *args, **kwargs)
