from django.core.exceptions import ValidationError
from django.utils.translation import gettext_lazy as _

UBN_WEIGHTS = (1, 2, 1, 2, 1, 2, 4, 1)


def is_valid_vat_number(value):
    """Check a Taiwanese unified business number (統一編號).

    Each digit is multiplied by its weight, the digits of each product are
    added up, and the sum must be divisible by 5 (the rule in force since
    2023; numbers valid under the older divisible-by-10 rule still pass).
    When the seventh digit is 7 its product is 28, whose digit sum 10 may
    be counted as 1 instead, so the sum plus one is accepted as well.
    """
    if not isinstance(value, str) or len(value) != 8 or not value.isdigit():
        return False
    total = 0
    for digit, weight in zip(value, UBN_WEIGHTS):
        product = int(digit) * weight
        total += product // 10 + product % 10
    if total % 5 == 0:
        return True
    return value[6] == "7" and (total + 1) % 5 == 0


def validate_vat_number(value):
    if value and not is_valid_vat_number(value):
        raise ValidationError(
            _("%(value)s is not a valid unified business number."),
            code="invalid_vat_number",
            params={"value": value},
        )
