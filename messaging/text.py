"""What the database can store, for any text or JSON that reaches a column.

PostgreSQL's text and jsonb refuse U+0000; a lone surrogate (JSON allows the escape "\\ud800")
cannot be encoded as UTF-8; jsonb refuses NaN and Infinity (Python's json writes them). One rule
for the webhook parsers (messaging/providers/base.py) and the API's input (messaging/api/fields.py),
so that what either accepts is never a failed write later.
"""

import math


def unstorable(value) -> str | None:
    """Why `value` (a string, or JSON made of dicts, lists and scalars) cannot be stored, or
    None. Iterative, so deep nesting cannot exhaust the stack here."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return "contains a NUL character"
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return "contains an unpaired surrogate"
        elif isinstance(item, float):
            if not math.isfinite(item):
                return "contains a number out of range"
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
    return None


def json_depth(value, limit: int) -> bool:
    """True when `value` nests deeper than `limit` containers."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth > limit:
                return True
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return False
