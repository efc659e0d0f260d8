"""`consumer`: the consuming system itself, judged from its own sign-ins in Entra ID's sign-in log.

mailwarden's other checks prove that *its own* token and mailbox access work. This one reads the sign-ins of the
integration's app by the consuming system (``ctx.signins``, the port ``checks.base.SignInLog``; mailwarden's own
sign-ins are never among them) and says whether that system itself signs in. It asks nothing of the integration's
token (``uses_app_token = False``, ``depends_on = ()``).

What counts (issue 16):
- ``fail`` ``consumer_signin_failed`` only when every attempt since the consumer's last success failed with a
  catalogued AADSTS code (``diagnoses.AADSTS_CODES``). Interrupts (``INTERRUPTS``: 50058, 50140, 50074, the MFA
  prompts 50076/50079, the account pickers 16000/16001) and Entra's transient answers (throttling, a busy service:
  ``diagnoses.AADSTS_STATUS``) are neither a success nor a failure: followed by a success they never count, and on
  their own they never make a failure. The verdict reaches back to the last success however old, as far as the log
  is stored: a consumer that stopped retrying after a fatal code stays failed until it signs in. Its summary names
  the consumer's own code, how often and since when ("Oracle B2C Service itself fails to sign in: AADSTS50173, 14
  times since 10:02 UTC"); the catalog chooses the cause and the fix by that code, acting in that system.
- failures since the last success that are not all catalogued (a code the catalog does not know), or interrupts
  with no success at all: ``warn`` ``consumer_signin_failed``: something is wrong, not known to be fatal.
- ``consumer_silent`` when ``expect_every`` is set and the consumer has not signed in at all (success or failure)
  for longer: ``warn`` first, ``fail`` after ``silent_grace`` more. Logs arrive late, so the gap is measured up to
  what the log holds for certain: ``read_until`` (the poller's newest read) less the lateness of the consumer's
  event types (``LATE``); the summary says "as of" that time. Without ``expect_every`` a consumer is never silent;
  the metrics then suggest one from the cadence observed (``suggest_every``).
- ``ok``: the last successful sign-in and, for app-only, the keyId of the credential it used
  (``credential_key_id``); for delegated consumers the credential in use is "unknown". Whether that keyId is the
  app's newest secret is not said here: it would cost a Graph read of the app's credentials on every run.
- Sign-ins labelled ``unconfirmed`` (inside a browser reauthorisation window, not matched to mailwarden) never
  count, either way, and are mentioned.
- The log cannot be read (``ctx.signins`` is None, or the window's state is not ``ok``): ``warn``
  ``consumer_unknown`` with the poller's note (one per tenant, said by the poller; relayed here). ``warn`` opens no
  incident (no alert storm for an unlicensed tenant), does not make the integration unavailable, and
  ``alerts.policy`` takes it as "nothing known": it resolves no open incident either.

The metrics of a failure carry its cause for grouping (``alerts.policy.cause_of``): ``cause`` (the catalog's
diagnosis of the consumer's code), ``cause_credential`` (the credential it presented, as ``hint:<3>`` or
``cert:<thumbprint>`` like the alert policy's keys, when the sign-in's keyId or the app's only secret says which)
and ``cause_account`` (the delegated account).
"""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from mailwarden.checks import diagnoses
from mailwarden.checks.base import CheckContext, Flow, Outcome, Permission, SignIn, SignInWindow, Status
from mailwarden.checks.credentials import AppCredential
from mailwarden.durations import Duration

KIND = "consumer"
# Interactive interrupts: the sign-in asks for a step (single sign-on session, "stay signed in?", MFA, an account
# picker) and usually succeeds right after. M365_FACTS.md names 50058, 50140 and 50074; Microsoft's error reference
# calls 16000 InteractionRequired and 16001 an account-selection retry; 50076/50079 are the MFA prompts.
INTERRUPTS = frozenset({50058, 50140, 50074, 50076, 50079, 16000, 16001})
# Entra's own transient answers (a request loop, throttling, a busy service): no verdict on the consumer's access
TRANSIENT = frozenset(diagnoses.AADSTS_STATUS)
# How late the sign-in log is, per flow (M365_FACTS.md: about 2 minutes at p95, 5 at p99; non-interactive sign-ins
# up to 15-30 minutes). A gap is measured only up to read_until less this.
LATE = {"app": timedelta(minutes=5), "delegated": timedelta(minutes=30)}
# the consumer's codes whose cause is about one credential: grouped with mailwarden's failure of that credential
CREDENTIAL_CAUSES = frozenset({"secret_expired", "secret_invalid", "certificate_invalid"})
_MAX_DAYS = 30.0 * 86400  # Entra ID keeps sign-in logs 30 days (P1/P2)


class ConsumerOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # the consumer signs in at least this often; silence past it is `warn` consumer_silent (default: never silent)
    expect_every: Duration | None = Field(None, le=_MAX_DAYS)
    silent_grace: Duration = Field(3600.0, le=_MAX_DAYS)  # silence past expect_every + this: `fail` (an incident)
    lookback: Duration = Field(86400.0, le=_MAX_DAYS)  # how far back sign-ins are considered (cadence, "no sign-in")


def is_interrupt(code: int) -> bool:
    return code in INTERRUPTS


def is_neutral(code: int) -> bool:
    """Neither a success nor a failure of the consumer's access: an interrupt or Entra's transient answer."""
    return code in INTERRUPTS or code in TRANSIENT


def is_fatal(code: int) -> bool:
    """A refusal the catalog knows (``diagnoses.AADSTS_CODES``), not an interrupt or a transient answer."""
    return code != 0 and code in diagnoses.AADSTS_CODES and not is_neutral(code)


def _utc(t: datetime) -> datetime:
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


def when(t: datetime, now: datetime) -> str:
    """A time as the summaries say it: "10:02 UTC" on the day of ``now``, else with its date."""
    t, now = _utc(t), _utc(now)
    return f"{t:%H:%M} UTC" if t.date() == now.date() else f"{t:%Y-%m-%d %H:%M} UTC"


def span(seconds: float) -> str:
    """A length of time in words: "45 min", "3 h 10 min", "2 d 4 h"."""
    minutes = max(0, int(seconds // 60))
    days, rest = divmod(minutes, 1440) if minutes >= 2 * 1440 else (0, minutes)
    hours, mins = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h" if hours else f"{days} d"
    if hours:
        return f"{hours} h {mins} min" if mins else f"{hours} h"
    return f"{mins} min"


def config_duration(seconds: float) -> str:
    """A duration as the config writes it ('15m', '3h', '2d'), whole units only."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


def suggest_every(times: Sequence[datetime], *, burst_s: float = 60.0, min_gaps: int = 3) -> float | None:
    """An ``expect_every`` from the cadence observed: the 95th percentile of the gaps between sign-ins (attempts a
    minute apart are one: an interrupt and its success), times 3, rounded up to 5 minutes below an hour, to whole
    hours below a day, else to whole days. None with fewer than ``min_gaps`` gaps to go by."""
    moments: list[datetime] = []
    for t in sorted(_utc(t) for t in times):
        if not moments or (t - moments[-1]).total_seconds() > burst_s:
            moments.append(t)
    gaps = sorted((b - a).total_seconds() for a, b in zip(moments, moments[1:], strict=False))
    if len(gaps) < min_gaps:
        return None
    p95 = gaps[max(0, math.ceil(0.95 * len(gaps)) - 1)]
    want = 3 * p95
    for limit, unit in ((3600, 300), (86400, 3600)):
        if want <= limit:
            return max(unit, math.ceil(want / unit) * unit)
    return math.ceil(want / 86400) * 86400


def _aadsts(code: int) -> str:
    return f"AADSTS{code}"


class ConsumerCheck:
    kind: ClassVar[str] = KIND
    config_model: ClassVar[type[BaseModel]] = ConsumerOptions
    depends_on: ClassVar[tuple[str, ...]] = ()
    needs: ClassVar[Mapping[Flow, tuple[Permission, ...]]] = {}
    uses_app_token: ClassVar[bool] = False  # it reads evidence through the monitor app, not the integration's token
    needs_credential: ClassVar[bool] = False
    endpoint: ClassVar[str | None] = None

    async def run(self, ctx: CheckContext) -> Outcome:
        options: ConsumerOptions = ctx.options  # type: ignore[assignment]
        integ = ctx.integration
        system = integ.system or integ.name
        if ctx.signins is None:
            return unknown(system, "none", None)
        window = await asyncio.to_thread(ctx.signins.window, integ)  # a database read (monitor.signins)
        if window.state != "ok":
            return unknown(system, window.state, window.note)
        now = ctx.now()
        outcome = judge(window, options, now, system=system, flow=integ.flow, account=integ.account)
        if outcome.code == "consumer_signin_failed" and outcome.metrics.get("cause") in CREDENTIAL_CAUSES:
            credential = await credential_of(ctx, outcome.metrics)
            if credential is not None:
                outcome = judge(window, options, now, system=system, flow=integ.flow, account=integ.account,
                                credential=credential)
        return outcome


def unknown(system: str, state: str, note: str | None) -> Outcome:
    """The consuming system cannot be judged: why (the poller's note for the tenant), and how to enable it."""
    why = note or {
        "none": "no sign-in log is collected where this check ran (the mailwarden process that polls the tenants' "
                "sign-in logs judges it)",
        "pending": "mailwarden has not read the tenant's sign-in log yet",
    }.get(state, "the tenant's sign-in log could not be read")
    return Outcome(Status.WARN, "consumer_unknown", f"{system}'s own sign-ins are unknown ({state}): {why}",
                   metrics={"signin_state": state, "note": note})


def judge(window: SignInWindow, options: ConsumerOptions, now: datetime, *, system: str, flow: str,
          account: str | None = None, credential: AppCredential | None = None) -> Outcome:
    """The verdict on a readable window (state ``ok``): pure, the time passed in. ``credential``: the app's
    credential a failure about a credential is about (``credential_of``), named in the result."""
    now = _utc(now)
    signins = sorted(window.signins, key=lambda s: _utc(s.at))
    mine = [s for s in signins if s.origin == "consumer"]
    horizon = now - timedelta(seconds=options.lookback)
    unconfirmed = [s for s in signins if s.origin != "consumer" and _utc(s.at) >= horizon]
    read_until = _utc(window.read_until) if window.read_until else now
    as_of = min(now, read_until)
    complete = as_of - LATE.get(flow, LATE["delegated"])

    last_ok = next((i for i in range(len(mine) - 1, -1, -1) if mine[i].error_code == 0), None)
    success = mine[last_ok] if last_ok is not None else None
    after = mine[last_ok + 1:] if last_ok is not None else mine
    counted = [s for s in after if not is_neutral(s.error_code)]
    neutral = [s for s in after if is_neutral(s.error_code)]
    recent = [s for s in mine if _utc(s.at) >= horizon]

    metrics: dict[str, Any] = {
        "signin_state": "ok", "flow": flow, "as_of": as_of.isoformat(), "log_since": _iso(window.since),
        "last_success_at": _iso(success.at) if success else None,
        "last_signin_at": _iso(mine[-1].at) if mine else None,
        "signins_in_lookback": len(recent), "interrupts_since_success": len(neutral),
        "unconfirmed": len(unconfirmed),
    }
    suggested = suggest_every([s.at for s in recent])
    if suggested is not None:
        metrics["suggested_expect_every"] = config_duration(suggested)
        metrics["suggested_expect_every_s"] = suggested
    tail = _tail(unconfirmed, as_of, now)

    verdicts: list[Outcome] = []
    if counted:
        verdicts.append(_failing(system, flow, account, counted, success, now, metrics, tail, credential))
    elif neutral and success is None and any(_utc(s.at) >= horizon for s in neutral):
        codes = Counter(s.error_code for s in neutral)
        latest = neutral[-1].error_code
        verdicts.append(Outcome(
            Status.WARN, "consumer_signin_failed",
            f"{system} has not signed in successfully in the log: only interrupts since "
            f"{when(neutral[0].at, now)} ({len(neutral)}: {', '.join(_aadsts(c) for c in codes)}; the latest "
            f"{_aadsts(latest)}), which are not failures on their own{tail}",
            metrics={**metrics, "consumer_code": latest, "consumer_aadsts": _aadsts(latest),
                     "consumer_count": codes[latest], "consumer_first_at": _iso(neutral[0].at),
                     "consumer_last_at": _iso(neutral[-1].at), "consumer_codes": _codes(codes),
                     "consumer_fatal": False}))
    if options.expect_every is not None:
        silent = _silence(system, options, mine, window, complete, as_of, now, metrics, tail)
        if silent is not None:
            verdicts.append(silent)
    if verdicts:
        # a fatal failure first, then a silence past its grace, then the warnings (a failure before a silence)
        return min(verdicts, key=lambda o: (0 if o.status == Status.FAIL else 1,
                                            0 if o.code == "consumer_signin_failed" else 1))
    return _ok(system, flow, success, neutral, recent, as_of, now, options, metrics, tail)


def _failing(system: str, flow: str, account: str | None, counted: list[SignIn], success: SignIn | None,
             now: datetime, metrics: dict[str, Any], tail: str, credential: AppCredential | None) -> Outcome:
    fatal = all(is_fatal(s.error_code) for s in counted)
    latest = counted[-1]
    code = latest.error_code
    same = [s for s in counted if s.error_code == code]
    codes = Counter(s.error_code for s in counted)
    others = len(counted) - len(same)
    cause = diagnoses.classify_aadsts([code])
    summary = (f"{system} itself fails to sign in: {_aadsts(code)}, {_times(len(same))} since "
               f"{when(same[0].at, now)}")
    if credential is not None:
        name = f"'{credential.display_name}'" if credential.display_name else credential.key_id
        end = credential.end_at
        ended = end if end is not None and _utc(end) <= now else None
        summary += f", with credential {name}" + (f" (ended {when(ended, now)})" if ended is not None else "")
    if others:
        named = ", ".join(_aadsts(c) for c in codes if c != code)
        summary += f", and {others} other refusal{'s' if others > 1 else ''} ({named})"
    if _utc(latest.at) < _utc(now) - timedelta(hours=1):
        summary += f"; last attempt {when(latest.at, now)}"
    summary += (f"; last success {when(success.at, now)}" if success is not None
                else "; no success in the stored log")
    if not fatal:
        unknown_codes = sorted({s.error_code for s in counted if not is_fatal(s.error_code)})
        summary += (f" ({', '.join(_aadsts(c) for c in unknown_codes)} not in mailwarden's catalog: not known to be "
                    "fatal)")
    key_id = next((s.credential_key_id for s in reversed(same) if s.credential_key_id), None)
    signer = next((s.account for s in reversed(same) if s.account), None) or account
    out = {**metrics, "consumer_code": code, "consumer_aadsts": _aadsts(code), "consumer_count": len(same),
           "consumer_first_at": _iso(same[0].at), "consumer_last_at": _iso(latest.at),
           "consumer_failures": len(counted), "consumer_codes": _codes(codes), "consumer_fatal": fatal,
           "consumer_reason": (latest.failure_reason or "")[:300] or None,
           "credential_key_id": key_id, "cause": cause,
           "cause_account": signer.lower() if flow == "delegated" and signer else None,
           "cause_credential": _marker(credential)}
    if credential is not None:
        out.update(credential_name=credential.display_name,
                   credential_expires_at=credential.end_at.isoformat() if credential.end_at else None)
    return Outcome(Status.FAIL if fatal else Status.WARN, "consumer_signin_failed", summary + tail, metrics=out)


def _silence(system: str, options: ConsumerOptions, mine: list[SignIn], window: SignInWindow, complete: datetime,
             as_of: datetime, now: datetime, metrics: dict[str, Any], tail: str) -> Outcome | None:
    expect = timedelta(seconds=options.expect_every or 0)
    grace = timedelta(seconds=options.silent_grace)
    if mine:
        last = _utc(mine[-1].at)
        said = f"last sign-in {when(last, now)}"
    else:
        last = _utc(window.since) if window.since else now - timedelta(seconds=options.lookback)
        said = f"none in the log since {when(last, now)}"
    gap = complete - last  # only what the log holds for certain: a gap ending in the last minutes may still fill in
    if gap <= expect:
        return None
    status = Status.FAIL if gap > expect + grace else Status.WARN
    out = {**metrics, "silent_for_s": round(gap.total_seconds()), "expect_every_s": options.expect_every,
           "silent_grace_s": options.silent_grace}
    return Outcome(status, "consumer_silent",
                   f"{system} has not signed in for over {span(gap.total_seconds())} ({said}; expected at least every "
                   f"{span(expect.total_seconds())}), as of {when(as_of, now)}{tail}", metrics=out)


def _ok(system: str, flow: str, success: SignIn | None, neutral: list[SignIn], recent: list[SignIn],
        as_of: datetime, now: datetime, options: ConsumerOptions, metrics: dict[str, Any], tail: str) -> Outcome:
    key_id = success.credential_key_id if success is not None and flow == "app" else None
    out = {**metrics, "credential_key_id": key_id,
           "credential_in_use": key_id if key_id else "unknown"}
    if success is None or not recent:
        hint = "" if options.expect_every is not None else \
            " (set expect_every to be told when it stops" + (
                f"; {metrics['suggested_expect_every']} fits its cadence)" if "suggested_expect_every" in metrics
                else ")")
        summary = (f"no sign-in of {system} in the last {span(options.lookback)}, as of {when(as_of, now)}"
                   + (f"; last success {when(success.at, now)}" if success is not None else "") + hint)
        return Outcome.ok(summary + tail, metrics=out)
    summary = f"{system} signed in successfully at {when(success.at, now)}"
    if flow == "app":
        summary += f" with credential {key_id}" if key_id else " (its credential's keyId not in the log)"
    else:
        summary += " (the credential it uses is unknown for a delegated sign-in)"
    if neutral:
        summary += f"; {len(neutral)} interrupt{'s' if len(neutral) > 1 else ''} since, not failures"
    return Outcome.ok(f"{summary}, as of {when(as_of, now)}{tail}", metrics=out)


async def credential_of(ctx: CheckContext, metrics: dict[str, Any]) -> AppCredential | None:
    """The app's credential the consumer presented: the one whose keyId its sign-in gives, or else, for an expired
    secret, the app's only client secret when it has expired. Read through the monitor app (``ctx.credentials``,
    shared by the cycle), and only for a failure about a credential, never on a passing run; None when it cannot be
    known."""
    try:
        read = await ctx.credentials.read(ctx.integration.app)
    except Exception:  # noqa: BLE001 - which credential is a detail for grouping; the verdict stands without it
        return None
    if not getattr(read, "ok", False):
        return None
    key_id = metrics.get("credential_key_id")
    if key_id:
        return next((c for c in read.credentials if c.key_id == key_id), None)
    if metrics.get("cause") != "secret_expired":  # an invalid secret or certificate is none of the app's
        return None
    secrets = [c for c in read.credentials if c.kind == "client_secret"]
    now = ctx.now()
    return secrets[0] if len(secrets) == 1 and secrets[0].end_at is not None and secrets[0].end_at <= now else None


def _marker(credential: AppCredential | None) -> str | None:
    """A credential as the alert policy's keys name it (``monitor.alerting.configured_credential``)."""
    if credential is None:
        return None
    if credential.kind == "client_secret" and credential.hint:
        return f"hint:{credential.hint}"
    if credential.kind == "certificate" and credential.thumbprint:
        return f"cert:{credential.thumbprint.upper()}"
    return None


def _times(n: int) -> str:
    return "once" if n == 1 else f"{n} times"


def _codes(counts: Counter[int]) -> dict[str, int]:
    return {_aadsts(c): n for c, n in counts.items()}


def _iso(t: datetime | None) -> str | None:
    return _utc(t).isoformat() if t else None


def _tail(unconfirmed: list[SignIn], as_of: datetime, now: datetime) -> str:
    if not unconfirmed:
        return ""
    n = len(unconfirmed)
    return (f"; {n} unconfirmed sign-in{'s' if n > 1 else ''} during a reauthorisation, not counted (last "
            f"{when(unconfirmed[-1].at, now)})")
