import pytest
from hypothesis import given
from hypothesis import strategies as st

from voucher_distributor.domain.email_states import (
    DELIVERY_TAG,
    NotAnEmailEvent,
    apply_event,
    moves_forward,
    parse_ses_event,
    rank,
)
from voucher_distributor.models.email import EmailDelivery, EmailEventRecord, EmailState

STATES = list(EmailState)


def test_the_states_are_exactly_the_contract():
    assert {s.value for s in EmailState} == {
        "scheduled",
        "sent",
        "delivered",
        "delayed",
        "bounced",
        "complained",
        "suppressed",
        "failed",
        "unknown",
        "not-sent",
    }


def _delivery(state=EmailState.UNKNOWN, delivery_id="d-1"):
    return EmailDelivery(
        batch_id="b", row_number=2, delivery_id=delivery_id, state=state, updated_at=100
    )


def _event(state, *, event_id="", at=200, delivery_id="d-1", detail=""):
    return EmailEventRecord(
        at=at, state=state, source="test", event_id=event_id, delivery_id=delivery_id,
        detail=detail,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("before", "after"),
    [
        (EmailState.UNKNOWN, EmailState.SENT),
        (EmailState.SENT, EmailState.DELAYED),
        (EmailState.DELAYED, EmailState.DELIVERED),
        (EmailState.SENT, EmailState.DELIVERED),
        (EmailState.DELIVERED, EmailState.BOUNCED),
        (EmailState.DELIVERED, EmailState.COMPLAINED),
        (EmailState.BOUNCED, EmailState.COMPLAINED),
        (EmailState.UNKNOWN, EmailState.SUPPRESSED),
    ],
)
def test_states_move_forward(before, after):
    assert moves_forward(before, after)
    applied = apply_event(_delivery(before), _event(after))
    assert applied.changed
    assert applied.delivery.state == after


@pytest.mark.parametrize(
    ("before", "late"),
    [
        (EmailState.DELIVERED, EmailState.SENT),
        (EmailState.DELIVERED, EmailState.DELAYED),
        (EmailState.BOUNCED, EmailState.DELIVERED),
        (EmailState.COMPLAINED, EmailState.BOUNCED),
        (EmailState.BOUNCED, EmailState.FAILED),
        (EmailState.SENT, EmailState.UNKNOWN),
    ],
)
def test_a_late_event_is_history_not_a_change(before, late):
    applied = apply_event(_delivery(before), _event(late))
    assert not applied.changed
    assert applied.delivery.state == before
    assert applied.delivery.history[-1].state == late


def test_a_duplicate_event_is_dropped():
    first = apply_event(_delivery(EmailState.SENT), _event(EmailState.DELIVERED, event_id="e1"))
    again = apply_event(first.delivery, _event(EmailState.DELIVERED, event_id="e1"))
    assert again.duplicate
    assert not again.changed
    assert len(again.delivery.history) == 1


def test_an_event_of_an_earlier_attempt_does_not_move_the_current_one():
    applied = apply_event(
        _delivery(EmailState.SENT, delivery_id="d-2"),
        _event(EmailState.BOUNCED, delivery_id="d-1"),
    )
    assert not applied.changed
    assert applied.delivery.state == EmailState.SENT


def test_a_bounce_keeps_its_diagnostic():
    applied = apply_event(
        _delivery(EmailState.SENT),
        _event(EmailState.BOUNCED, detail="Permanent/General; 550 5.1.1 user unknown"),
    )
    assert applied.delivery.reason == "Permanent/General; 550 5.1.1 user unknown"


@given(st.lists(st.sampled_from(STATES), max_size=12))
def test_any_order_of_events_ends_at_the_highest_rank_seen(states):
    delivery = _delivery(EmailState.SCHEDULED)
    for n, state in enumerate(states):
        delivery = apply_event(delivery, _event(state, event_id=f"e{n}", at=n)).delivery
    top = max([EmailState.SCHEDULED, *states], key=rank)
    assert rank(delivery.state) == rank(top)
    assert len(delivery.history) == len(states)


# ---------------------------------------------------------------------- SES events


def _ses(event_type, section=None, body=None, tags=None):
    detail = {
        "eventType": event_type,
        "mail": {
            "timestamp": "2026-12-03T10:00:00.000Z",
            "messageId": "0100018c-abc",
            "tags": tags if tags is not None else {DELIVERY_TAG: ["d-1"]},
        },
    }
    if section:
        detail[section] = body or {}
    return detail


@pytest.mark.parametrize(
    ("event_type", "section", "body", "state"),
    [
        ("Send", "send", {}, EmailState.SENT),
        ("Delivery", "delivery", {"timestamp": "2026-12-03T10:00:05.000Z"}, EmailState.DELIVERED),
        ("DeliveryDelay", "deliveryDelay", {"delayType": "MailboxFull"}, EmailState.DELAYED),
        (
            "Bounce",
            "bounce",
            {"bounceType": "Permanent", "bounceSubType": "General"},
            EmailState.BOUNCED,
        ),
        (
            "Bounce",
            "bounce",
            {"bounceType": "Permanent", "bounceSubType": "OnAccountSuppressionList"},
            EmailState.SUPPRESSED,
        ),
        (
            "Bounce",
            "bounce",
            {"bounceType": "Permanent", "bounceSubType": "Suppressed"},
            EmailState.SUPPRESSED,
        ),
        ("Bounce", "bounce", {"bounceType": "Transient"}, EmailState.FAILED),
        ("Complaint", "complaint", {"complaintFeedbackType": "abuse"}, EmailState.COMPLAINED),
        ("Reject", "reject", {"reason": "Bad content"}, EmailState.FAILED),
        ("Rendering Failure", "failure", {"errorMessage": "x"}, EmailState.FAILED),
    ],
)
def test_ses_event_types_map_to_states(event_type, section, body, state):
    event = parse_ses_event(_ses(event_type, section, body), received_at=0)
    assert event is not None
    assert event.state == state
    assert event.message_id == "0100018c-abc"
    assert event.delivery_id == "d-1"
    assert event.at > 1_700_000_000


def test_a_bounce_event_carries_the_diagnostic():
    event = parse_ses_event(
        _ses(
            "Bounce",
            "bounce",
            {
                "bounceType": "Permanent",
                "bounceSubType": "General",
                "bouncedRecipients": [{"diagnosticCode": "smtp; 550 5.1.1 user unknown"}],
            },
        ),
        received_at=0,
    )
    assert event is not None
    assert event.detail == "Permanent/General; smtp; 550 5.1.1 user unknown"


def test_tracking_events_say_nothing_about_delivery():
    assert parse_ses_event(_ses("Open", "open"), received_at=0) is None
    assert parse_ses_event(_ses("Click", "click"), received_at=0) is None


def test_an_event_without_our_tag_has_no_delivery_id():
    event = parse_ses_event(_ses("Send", "send", tags={}), received_at=5)
    assert event is not None
    assert event.delivery_id == ""


@pytest.mark.parametrize(
    "detail",
    [
        {},
        {"eventType": "Send"},
        {"eventType": "Send", "mail": {}},
        {"eventType": "Nope", "mail": {"messageId": "m"}},
        [],
        "x",
    ],
)
def test_anything_else_is_not_an_email_event(detail):
    with pytest.raises(NotAnEmailEvent):
        parse_ses_event(detail, received_at=0)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)


@given(
    st.fixed_dictionaries(
        {},
        optional={
            "eventType": st.sampled_from(["Send", "Bounce", "Delivery", "Complaint", "X"]) | _json,
            "mail": st.fixed_dictionaries(
                {}, optional={"messageId": _json, "tags": _json, "timestamp": _json}
            )
            | _json,
            "bounce": _json,
            "delivery": _json,
        },
    )
)
def test_the_parser_never_fails_but_with_its_own_error(detail):
    try:
        event = parse_ses_event(detail, received_at=7)
    except NotAnEmailEvent:
        return
    if event is not None:
        assert isinstance(event.state, EmailState)
        assert event.message_id
