"""Order-entry request bodies, built from Python arguments. Pure.

Rules of this module:

* Amounts go out as decimal strings. ``str``, :class:`~decimal.Decimal` and
  ``int`` are taken; a ``float`` is refused with :class:`TypeError`, because
  ``0.1`` as a float is not 0.1 and an order must carry exactly what was meant.
* Only the fields given are sent: the server's defaults (docs/protocol.md,
  "Placing an order") apply to the rest, one set of rules for REST and
  WebSocket.
* Validation of values (sides, tick sizes, symbols...) is the server's: its
  error comes back as :class:`~gateway.client.RequestError` with the field.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

AmountLike = str | Decimal | int


def amount(value: AmountLike, name: str) -> str:
    """``value`` as the decimal string the server parses."""
    if isinstance(value, bool) or not isinstance(value, (str, Decimal, int)):
        raise TypeError(f"{name} must be a decimal string, a Decimal or an int, not "
                        f"{type(value).__name__} (a float cannot hold most decimal prices "
                        f"exactly): write {name}=\"50000.00\" or Decimal(\"50000.00\")")
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError(f"{name} must be a finite number, not {value}")
        return format(value, "f")
    return str(value)


def place_fields(
    symbol: str, side: str, quantity: AmountLike, price: AmountLike | None, *,
    order_type: str | None, time_in_force: str | None, post_only: bool | None,
    self_trade_prevention: str | None, client_order_id: str | None,
) -> dict[str, Any]:
    order: dict[str, Any] = {"symbol": symbol, "side": side,
                             "quantity": amount(quantity, "quantity")}
    if price is not None:
        order["price"] = amount(price, "price")
    optional = {"type": order_type, "time_in_force": time_in_force, "post_only": post_only,
                "self_trade_prevention": self_trade_prevention,
                "client_order_id": client_order_id}
    order.update({name: value for name, value in optional.items() if value is not None})
    return {"order": order}


def target_fields(order_id: int | None, client_order_id: str | None) -> dict[str, Any]:
    """Which order an amend or cancel names: exactly one of the two."""
    if (order_id is None) == (client_order_id is None):
        raise ValueError("name the order by order_id or by client_order_id (exactly one)")
    return {"order_id": order_id} if order_id is not None else {
        "client_order_id": client_order_id}


def amend_fields(order_id: int | None, client_order_id: str | None,
                 price: AmountLike | None, quantity: AmountLike | None) -> dict[str, Any]:
    fields = target_fields(order_id, client_order_id)
    if price is not None:
        fields["price"] = amount(price, "price")
    if quantity is not None:
        fields["quantity"] = amount(quantity, "quantity")
    return fields
