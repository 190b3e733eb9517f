"""`{% message_callbacks message %}`: the callbacks of a message, for its admin page."""

from django import template

from messaging.callback_selectors import callbacks_of_message

register = template.Library()


@register.inclusion_tag("admin/messaging/callbacks/_message_callbacks.html")
def message_callbacks(message):
    return {"callbacks": callbacks_of_message(message)}
