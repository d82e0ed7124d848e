"""The local SES (rate limit, recorded sends, the mailbox simulator's events) and the sending
pacer, on clocks the tests drive (no sleeping)."""

from __future__ import annotations

from voucher_distributor.domain.email_states import parse_ses_event
from voucher_distributor.models.email import EmailState
from voucher_distributor.pipeline.email import Pacer
from voucher_distributor_cli.local.runner.local_ses import LocalSes, SentMail


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_the_pacer_spaces_calls_to_the_rate() -> None:
    clock = Clock()
    pacer = Pacer(4, clock, clock.sleep)
    for _ in range(9):
        pacer.wait()
    # The first goes at once, then one every 0.25 s: 8 gaps.
    assert abs(sum(clock.slept) - 2.0) < 1e-9
    assert clock.now - 1_000.0 == 2.0


def test_the_pacer_does_not_wait_when_the_work_is_slower_than_the_rate() -> None:
    clock = Clock()
    pacer = Pacer(10, clock, clock.sleep)
    for _ in range(5):
        pacer.wait()
        clock.now += 0.5  # each send takes longer than 1/rate
    assert clock.slept == []


def test_the_local_rate_limit_is_a_token_bucket() -> None:
    clock = Clock()
    ses = LocalSes(max_send_rate=5, clock=clock)
    admitted = sum(ses.admit() for _ in range(20))
    assert admitted == 5  # a second's worth of burst
    assert ses.throttled == 15
    clock.now += 1.0
    assert sum(ses.admit() for _ in range(20)) == 5


def _mail(to: str) -> SentMail:
    return SentMail(
        message_id="m-1",
        source="vouchers@acme.example",
        to=(to,),
        tags={"delivery-id": "f-b.3.1"},
        configuration_set="voucher-distributor-dev",
        raw=b"",
        at=1_800_000_000.0,
    )


def _states(to: str) -> list[EmailState]:
    ses = LocalSes()
    events = ses.events_of(_mail(to))
    parsed = [parse_ses_event(e["detail"], received_at=0) for e in events]
    assert all(p is not None and p.delivery_id == "f-b.3.1" for p in parsed)
    assert all(e["source"] == "aws.ses" for e in events)
    assert all(
        e["detail"]["mail"]["tags"]["ses:configuration-set"] == ["voucher-distributor-dev"]
        for e in events
    )
    return [p.state for p in parsed if p is not None]


def test_the_mailbox_simulator_addresses_produce_the_events_ses_would() -> None:
    sim = "simulator.amazonses.com"
    assert _states(f"success@{sim}") == [EmailState.SENT, EmailState.DELIVERED]
    assert _states(f"bounce@{sim}") == [EmailState.SENT, EmailState.BOUNCED]
    assert _states(f"complaint@{sim}") == [
        EmailState.SENT, EmailState.DELIVERED, EmailState.COMPLAINED,
    ]  # fmt: skip
    assert _states(f"suppressionlist@{sim}") == [EmailState.SENT, EmailState.SUPPRESSED]
    assert _states(f"ooto@{sim}") == [EmailState.SENT, EmailState.DELIVERED]
    assert _states("anyone@acme.example") == [EmailState.SENT, EmailState.DELIVERED]
    assert _states(f"success+label@{sim}") == [EmailState.SENT, EmailState.DELIVERED]


def test_recorded_sends_are_drained_once_and_written_as_eml(tmp_path) -> None:
    ses = LocalSes(mail_dir=tmp_path)
    ses.record(
        {
            "FromEmailAddress": "vouchers@acme.example",
            "Destination": {"ToAddresses": ["a@acme.example"]},
            "Content": {"Raw": {"Data": "U3ViamVjdDogaGkNCg0KYm9keQ0K"}},
            "EmailTags": [{"Name": "delivery-id", "Value": "f-b.1.1"}],
            "ConfigurationSetName": "cs",
        },
        "m-9",
    )
    assert ses.pending() == 1
    assert len(ses.drain()) == 2
    assert ses.drain() == []
    (eml,) = tmp_path.glob("*.eml")
    assert eml.read_bytes().startswith(b"Subject: hi")
