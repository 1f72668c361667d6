"""The bounds and formats a Twilio webhook's form must meet before anything else looks at
it (engine/twilio_form.py): refusals name the field, never quote the value."""

from __future__ import annotations

from urllib.parse import urlencode

import pytest

from engine.twilio_form import (
    MAX_BODY_BYTES,
    MAX_FIELDS,
    FormRefused,
    call_duration_s,
    check_identifiers,
    parse_form,
)

CALL_SID = "CA" + "0123456789abcdef" * 2
ACCOUNT_SID = "AC" + "FEDCBA9876543210" * 2


def twilio_like_form() -> dict[str, str]:
    """What Twilio's incoming-call webhook carries (its request parameters,
    https://www.twilio.com/docs/api/twiml/twilio_request, and some it may add): 40 fields."""
    form = {
        "CallSid": CALL_SID, "AccountSid": ACCOUNT_SID, "From": "+15550001111",
        "To": "+15557654321", "CallStatus": "ringing", "Direction": "inbound",
        "ApiVersion": "2010-04-01", "Caller": "+15550001111", "Called": "+15557654321",
        "CallToken": "%7B%22parentCallInfoToken%22%3A%22eyJhbGciOiJFUzI1NiJ9" + "x" * 600,
        "StirVerstat": "TN-Validation-Passed-A",
    }  # fmt: skip
    for prefix in ("From", "To", "Caller", "Called"):
        for suffix in ("City", "State", "Zip", "Country"):
            form[prefix + suffix] = "SPRINGFIELD" if suffix == "City" else "US"
    for n in range(13):
        form[f"Added{n}"] = "a field Twilio added without notice"
    return form


def test_a_real_sized_twilio_form_passes() -> None:
    form = twilio_like_form()
    body = urlencode(form).encode()
    assert 40 <= len(form) < MAX_FIELDS
    assert len(body) < MAX_BODY_BYTES
    pairs = parse_form(body)
    check_identifiers(pairs, "voice")
    check_identifiers([*pairs, ("CallDuration", "86400")], "status")
    assert dict(pairs) == form


def test_a_body_over_the_limit_is_refused_before_parsing() -> None:
    with pytest.raises(FormRefused) as refused:
        parse_form(b"a=" + b"x" * MAX_BODY_BYTES)
    assert (refused.value.status, refused.value.reason) == (413, "body_too_large")


def test_too_many_fields_are_refused_by_counting_separators() -> None:
    parse_form(b"&".join(b"f=1" for _ in range(MAX_FIELDS)))  # exactly the limit
    with pytest.raises(FormRefused) as refused:
        parse_form(b"&".join(b"f" for _ in range(MAX_FIELDS + 1)))
    assert (refused.value.status, refused.value.reason) == (400, "too_many_fields")


VALID = {"CallSid": CALL_SID, "AccountSid": ACCOUNT_SID, "From": "+15550001111", "To": "+1555"}


@pytest.mark.parametrize(
    "from_number",
    ["+15550001111", "+442071838750", "anonymous", "RESTRICTED", "client:alice_01",
     "sip:alice@example.sip.twilio.com;transport=tls", ""],
)  # fmt: skip
def test_every_form_twilio_uses_for_a_caller_passes(from_number: str) -> None:
    check_identifiers(list((VALID | {"From": from_number}).items()), "voice")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        pytest.param("CallSid", "CA100", id="short-sid"),
        pytest.param("CallSid", CALL_SID + "\nCRITICAL afterhours: FORGED LINE", id="sid-newline"),
        pytest.param("CallSid", CALL_SID[:-1] + "g", id="sid-not-hex"),
        pytest.param("CallSid", "CA" + "0" * 1_000_000, id="sid-1mb"),
        pytest.param("AccountSid", "AC" + "0" * 31, id="account-short"),
        pytest.param("To", "+1555\x000001111", id="to-nul"),
        pytest.param("To", "15557654321", id="to-no-plus"),
        pytest.param("To", "+0123", id="to-leading-zero"),
        pytest.param("To", "+1234567890123456", id="to-16-digits"),
        pytest.param("To", "+155\u06655", id="to-arabic-digit"),
        pytest.param("From", "+1555\r\n0001111", id="from-crlf"),
        pytest.param("From", "\x1b[31manonymous", id="from-ansi"),
        pytest.param("From", "client:al ice", id="from-space"),
        pytest.param("From", "client:" + "a" * 257, id="from-long-client"),
        pytest.param("From", "anonymous\n", id="from-trailing-newline"),
        pytest.param("CallDuration", "²", id="duration-superscript"),
        pytest.param("CallDuration", "1e22", id="duration-exponent"),
        pytest.param("CallDuration", "-1", id="duration-negative"),
        pytest.param("CallDuration", "1234567", id="duration-7-digits"),
    ],
)
def test_a_malformed_identifier_is_refused_naming_the_field_not_the_value(
    field: str, value: str
) -> None:
    pairs = list((VALID | {field: value}).items())
    with pytest.raises(FormRefused) as refused:
        check_identifiers(pairs, "status")
    assert (refused.value.status, refused.value.reason, refused.value.field) == (
        400, "bad_format", field,
    )  # fmt: skip
    assert refused.value.message.startswith(f"{field}: expected ")
    assert value not in refused.value.message


@pytest.mark.parametrize(
    ("pairs", "webhook", "field", "problem"),
    [
        ([("To", "+15551234567")], "voice", "CallSid", "missing"),
        ([("CallSid", CALL_SID)], "voice", "To", "missing"),
        ([("CallSid", CALL_SID), ("CallSid", CALL_SID)], "status", "CallSid", "given more"),
    ],
)
def test_required_and_repeated_identifiers(
    pairs: list[tuple[str, str]], webhook: str, field: str, problem: str
) -> None:
    with pytest.raises(FormRefused) as refused:
        check_identifiers(pairs, webhook)  # type: ignore[arg-type]
    assert refused.value.field == field
    assert problem in refused.value.message


def test_a_status_callback_needs_only_the_call_sid() -> None:
    check_identifiers([("CallSid", CALL_SID), ("CallStatus", "completed")], "status")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("42", 42), ("0", 0), ("999999", 999999), ("", None), (None, None), ("²", None),
     ("1e22", None), ("-1", None), ("4 2", None)],
)  # fmt: skip
def test_call_duration_is_whole_ascii_seconds(text: str | None, seconds: int | None) -> None:
    assert call_duration_s(text) == seconds
