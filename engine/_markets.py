"""Market specifications and the exact conversion between decimals and integers.

Rules of this module:

* Outside the engine, prices, quantities and fees are decimal strings. Inside,
  a price is an integer number of ticks, a quantity an integer number of lots,
  and a fee an integer number of ``10 ** -fee_precision`` quote units. The
  conversions here are exact or they refuse: an off-tick price is an error,
  never a rounding. No float is ever involved.
* Fee rule: ``fee = notional * rate``, rounded up (towards +infinity) to the
  fee precision, i.e. in the exchange's favour. A negative maker rate (a
  rebate) therefore rounds towards zero. The arithmetic is one integer
  multiplication and one floor division per fee.
"""

from __future__ import annotations

import functools
import re
from decimal import Context, Decimal, Inexact
from fractions import Fraction
from typing import Final

import attrs

from engine._events import RejectReason

MAX_UNITS: Final = (1 << 63) - 1
"""The largest number of ticks or lots: amounts are signed 64-bit in every encoding."""

_DECIMAL = re.compile(r"[0-9]{1,30}(?:\.[0-9]{1,30})?")
# Wide enough for any amount this module accepts or prints, and trapping any
# rounding, so that decimal arithmetic here is exact or fails loudly.
_EXACT = Context(prec=100, traps=[Inexact])


class UnitError(ValueError):
    """A decimal string that is not a valid amount for this market.

    Raised by the ``parse_*`` methods of :class:`MarketSpec`; ``reason`` is the
    stable code a gateway answers with.
    """

    def __init__(self, reason: RejectReason, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def _decimal(value: str | Decimal) -> Decimal:
    return value if isinstance(value, Decimal) else Decimal(value)


def _positive(_instance: object, attribute: attrs.Attribute[Decimal], value: Decimal) -> None:
    if not value.is_finite() or value <= 0:
        raise ValueError(f"{attribute.name} must be a positive decimal, got {value}")


def _non_negative(_instance: object, attribute: attrs.Attribute[Decimal], value: Decimal) -> None:
    if not value.is_finite() or value < 0:
        raise ValueError(f"{attribute.name} must be zero or positive, got {value}")


def _fee_rate(_instance: object, attribute: attrs.Attribute[Decimal], value: Decimal) -> None:
    if not value.is_finite() or not -1 < value < 1:
        raise ValueError(f"{attribute.name} must lie strictly between -1 and 1, got {value}")


def _scale(step: Decimal) -> int:
    """Number of decimal places needed to print multiples of ``step`` exactly."""
    exponent = step.normalize().as_tuple().exponent
    assert isinstance(exponent, int)
    return max(0, -exponent)


@attrs.frozen(kw_only=True)
class MarketSpec:
    """One market's rules. Decimal fields accept strings (``"0.01"``)."""

    symbol: str
    base: str
    quote: str
    tick_size: Decimal = attrs.field(converter=_decimal, validator=_positive)
    lot_size: Decimal = attrs.field(converter=_decimal, validator=_positive)
    min_quantity: Decimal = attrs.field(converter=_decimal, validator=_non_negative)
    min_notional: Decimal = attrs.field(converter=_decimal, validator=_non_negative)
    maker_fee_rate: Decimal = attrs.field(converter=_decimal, validator=_fee_rate)
    taker_fee_rate: Decimal = attrs.field(converter=_decimal, validator=_fee_rate)
    fee_precision: int = attrs.field(default=8, validator=attrs.validators.in_(range(19)))

    # --- decimal string -> integer units (the boundary) -----------------------

    def parse_price(self, text: str) -> int:
        """Ticks for a price such as ``"50000.01"``.

        Raises:
            UnitError: ``invalid_price`` (not a positive decimal, too large) or
                ``price_off_tick``.
        """
        return self._units(text, self.tick_size, RejectReason.INVALID_PRICE,
                           RejectReason.PRICE_OFF_TICK, "price")

    def parse_quantity(self, text: str) -> int:
        """Lots for a quantity such as ``"0.5"``.

        Raises:
            UnitError: ``invalid_quantity`` or ``quantity_off_lot``.
        """
        return self._units(text, self.lot_size, RejectReason.INVALID_QUANTITY,
                           RejectReason.QUANTITY_OFF_LOT, "quantity")

    def _units(
        self, text: str, step: Decimal, invalid: RejectReason, off_step: RejectReason, name: str
    ) -> int:
        if not isinstance(text, str) or _DECIMAL.fullmatch(text) is None:
            if isinstance(text, str) and text[:1] == "-" and _DECIMAL.fullmatch(text[1:]):
                raise UnitError(invalid, f"{name} must be positive, got {text}")
            raise UnitError(invalid, f"{name} must be a decimal string such as \"1.25\"")
        value = Decimal(text)
        if value <= 0:
            raise UnitError(invalid, f"{name} must be positive")
        units, rest = _EXACT.divmod(value, step)
        if units > MAX_UNITS:
            raise UnitError(invalid, f"{name} {text} is too large")
        if rest:
            raise UnitError(off_step, f"{name} {text} is not a multiple of {step}")
        return int(units)

    # --- integer units -> decimal string (the way out) ------------------------

    # Formatting is integer arithmetic only: a step is ``digits * 10 ** -places``,
    # so ``n`` steps print as the integer ``n * digits`` with the point moved.

    @functools.cached_property
    def _price_step(self) -> tuple[int, int]:
        return _fixed_point(self.tick_size)

    @functools.cached_property
    def _quantity_step(self) -> tuple[int, int]:
        return _fixed_point(self.lot_size)

    @functools.cached_property
    def _notional_step(self) -> tuple[int, int]:
        return _fixed_point(_EXACT.multiply(self.tick_size, self.lot_size))

    def format_price(self, ticks: int) -> str:
        digits, places = self._price_step
        return _format(ticks * digits, places)

    def format_quantity(self, lots: int) -> str:
        digits, places = self._quantity_step
        return _format(lots * digits, places)

    def format_fee(self, units: int) -> str:
        return _format(units, self.fee_precision)

    def format_notional(self, ticks: int, lots: int) -> str:
        digits, places = self._notional_step
        return _format(ticks * lots * digits, places)

    # --- integer rules used by the matching code -----------------------------

    @property
    def min_lots(self) -> int:
        """Smallest accepted quantity in lots (at least one lot)."""
        return max(1, _ceil(Fraction(self.min_quantity) / Fraction(self.lot_size)))

    @property
    def min_notional_units(self) -> int:
        """Smallest accepted ``price_ticks * quantity_lots`` of a limit order."""
        step = Fraction(self.tick_size) * Fraction(self.lot_size)
        return _ceil(Fraction(self.min_notional) / step)

    def fee_factor(self, rate: Decimal) -> tuple[int, int]:
        """``(num, den)`` with ``fee_units = ceil(ticks * lots * num / den)``."""
        factor = (
            Fraction(self.tick_size) * Fraction(self.lot_size) * Fraction(rate)
            * 10 ** self.fee_precision
        )
        return factor.numerator, factor.denominator

    def fee(self, ticks: int, lots: int, rate: Decimal) -> int:
        """Fee in fee units for one fill; the reference for the rule above."""
        num, den = self.fee_factor(rate)
        return -((-ticks * lots * num) // den)


def _ceil(value: Fraction) -> int:
    return -((-value.numerator) // value.denominator)


def _fixed_point(step: Decimal) -> tuple[int, int]:
    """``(digits, places)`` with ``step == digits * 10 ** -places``, exactly."""
    places = _scale(step)
    return int(step.scaleb(places, _EXACT)), places


def _format(scaled: int, places: int) -> str:
    """The integer ``scaled * 10 ** -places`` as a decimal string with ``places`` decimals."""
    if not places:
        return str(scaled)
    whole, fraction = divmod(abs(scaled), 10**places)
    return f"{'-' if scaled < 0 else ''}{whole}.{fraction:0{places}d}"


DEFAULT_MARKETS: Final = (
    MarketSpec(
        symbol="BTC/USDT", base="BTC", quote="USDT",
        tick_size="0.01", lot_size="0.00001", min_quantity="0.00001", min_notional="5",
        maker_fee_rate="0.0005", taker_fee_rate="0.001",
    ),
    MarketSpec(
        symbol="ETH/USDT", base="ETH", quote="USDT",
        tick_size="0.01", lot_size="0.0001", min_quantity="0.0001", min_notional="5",
        maker_fee_rate="0.0005", taker_fee_rate="0.001",
    ),
)
"""The markets an engine trades when given none: the seed service's two symbols."""
