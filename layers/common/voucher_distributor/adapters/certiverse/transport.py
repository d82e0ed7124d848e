"""The HTTP half of the Certiverse client: one pooled ``httpx.Client``, the bearer token, the
retries, ``nextLink`` paging, and the typed errors of a failed response.

Safety rules kept here:

* the bearer token is only ever sent to the configured origin (scheme, host and port), including
  when following ``nextLink``;
* reads are retried on timeouts, dropped connections, 429 and 5xx with jittered backoff honouring
  ``Retry-After``, within a bounded total time;
* the purchase POST has no idempotency key, so it is retried only when the request provably did
  not take effect (a refused connection or a 429); any other failure raises
  :class:`PurchaseOutcomeUnknown` and the caller must reconcile before buying again.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any, TypedDict, TypeVar

import httpx
from pydantic import ValidationError

from voucher_distributor.adapters.certiverse.errors import (
    CertiverseBadRequest,
    CertiverseMisconfigured,
    CertiverseRecordLimitExceeded,
    CertiverseServerError,
    CertiverseUnauthorized,
    CertiverseValidationError,
    PurchaseOutcomeUnknown,
    UnsafeNextLink,
)
from voucher_distributor.adapters.certiverse.retry import RetryPolicy, parse_retry_after
from voucher_distributor.adapters.certiverse.tokens import TokenProvider
from voucher_distributor.models.certiverse import CertiverseModel, Page

_log = logging.getLogger(__name__)

ModelT = TypeVar("ModelT", bound=CertiverseModel)

#: Explicit timeouts, well under any Lambda timeout: a hung call must not eat the invocation.
DEFAULT_TIMEOUT = httpx.Timeout(connect=3.0, read=15.0, write=10.0, pool=5.0)


class HttpOptions(TypedDict, total=False):
    """:class:`CertiverseHttp`'s options, which the client passes on (defaults there)."""

    retry: RetryPolicy | None
    timeout: httpx.Timeout
    transport: httpx.BaseTransport | None
    user_agent: str


class CertiverseHttp:
    """Authenticated, retried, origin-pinned requests to one Certiverse API base URL."""

    def __init__(
        self,
        base_url: str,
        tokens: TokenProvider,
        *,
        retry: RetryPolicy | None = None,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        transport: httpx.BaseTransport | None = None,
        user_agent: str = "voucher-distributor/0.1",
    ) -> None:
        base = httpx.URL(base_url.rstrip("/") + "/")
        if base.scheme not in {"http", "https"} or not base.host:
            raise CertiverseValidationError(
                f"the Certiverse base URL must be an http(s) URL, got {base_url!r}"
            )
        if base.path == "/":
            # The document writes every path as /api/vouchers/...: the host alone means that.
            base = base.join("api/")
        self._base = base
        self._tokens = tokens
        self._retry = retry or RetryPolicy()
        self._http = httpx.Client(
            timeout=timeout,
            transport=transport,
            follow_redirects=False,  # a redirect could carry the token elsewhere
            headers={"Accept": "application/json", "User-Agent": user_agent},
            limits=httpx.Limits(max_connections=20, max_keepalive_connections=10),
        )

    @property
    def base(self) -> httpx.URL:
        return self._base

    def close(self) -> None:
        self._http.close()

    def post(self, path: str, body: Any, model: type[ModelT]) -> ModelT:
        """POST once-only work (no idempotency key): see :meth:`send`'s ``idempotent``."""
        response = self.send("POST", self._base.join(path), json=body, idempotent=False)
        return _parse(model, response, self._base)

    def get_page(
        self, path: str, params: Mapping[str, str], model: type[Page[ModelT]]
    ) -> Page[ModelT]:
        return _parse(model, self.send("GET", self._base.join(path), params=params), self._base)

    def iter_all(
        self, path: str, params: Mapping[str, str], model: type[Page[ModelT]]
    ) -> Iterator[ModelT]:
        """Every item of every page, following ``nextLink`` (absolute or relative)."""
        url = self._base.join(path).copy_merge_params(dict(params))
        seen: set[str] = set()
        while True:
            seen.add(str(url))
            page = _parse(model, self.send("GET", url), self._base)
            yield from page.data
            if not page.next_link:
                return
            url = self.follow(url, page.next_link)
            if str(url) in seen:
                raise CertiverseServerError(f"Certiverse pagination loops back to {url.path}")

    def follow(self, current: httpx.URL, next_link: str) -> httpx.URL:
        target = current.join(next_link.strip())
        if (target.scheme, target.host, target.port) != (
            self._base.scheme,
            self._base.host,
            self._base.port,
        ):
            raise UnsafeNextLink(
                f"Certiverse returned a nextLink to {target.scheme}://{target.host}"
                f"{':' + str(target.port) if target.port else ''}, not the configured API "
                f"origin; refusing to send the token there"
            )
        return target

    def send(
        self,
        method: str,
        url: httpx.URL,
        *,
        params: Mapping[str, str] | None = None,
        json: Any = None,
        idempotent: bool = True,
    ) -> httpx.Response:
        policy = self._retry
        started = policy.clock()
        token = self._tokens.get_token()
        refreshed = False
        attempt = 0
        while True:
            attempt += 1
            failure: str
            retry_after: str | None = None
            status_code: int | None = None
            try:
                response = self._http.request(
                    method, url, params=params, json=json,
                    headers={"Authorization": f"Bearer {token}"},
                )  # fmt: skip
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                # Nothing reached the server: safe to retry even a POST.
                failure = f"cannot connect to Certiverse ({type(exc).__name__})"
            except httpx.TransportError as exc:
                failure = f"Certiverse connection failed ({type(exc).__name__})"
                if not idempotent:
                    raise PurchaseOutcomeUnknown(
                        f"{failure} after the purchase was sent; it may have been created"
                    ) from exc
            else:
                status_code = response.status_code
                if response.is_success:
                    return response
                if status_code == 401 and not refreshed:
                    # The secret may have been rotated since we cached it: re-read it once.
                    refreshed = True
                    token = self._tokens.get_token(refresh=True)
                    attempt -= 1
                    continue
                _raise_for_final_status(response, idempotent=idempotent, base=self._base)
                failure = f"Certiverse answered {status_code}"
                retry_after = response.headers.get("Retry-After")
            wait = policy.delay(attempt, retry_after)
            elapsed = policy.clock() - started
            if (
                attempt >= policy.max_attempts
                or wait > policy.max_retry_after_s
                or elapsed + wait > policy.total_budget_s
            ):
                raise CertiverseServerError(
                    f"{failure}; gave up after {attempt} attempt(s) in {elapsed:.1f}s",
                    status_code=status_code,
                    retry_after_s=parse_retry_after(retry_after, now=datetime.now(UTC)),
                )
            _log.warning(
                "Certiverse %s %s: %s; retry %d in %.2fs", method, url.path, failure, attempt, wait
            )
            policy.sleep(wait)


_M = TypeVar("_M", bound=CertiverseModel)


def _parse(model: type[_M], response: httpx.Response, base: httpx.URL) -> _M:
    try:
        return model.model_validate_json(response.content)
    except ValidationError as exc:
        if _json_or_none(response) is None:
            # An HTML page or plain text where the API answers JSON: not the API at all.
            kind = response.headers.get("content-type") or "non-JSON"
            raise CertiverseMisconfigured(
                f"{response.status_code} with a {kind} body, not the API's JSON",
                status_code=response.status_code,
                url=f"{response.request.method} {_without_query(response.request.url)}",
                base_url=str(base),
            ) from exc
        raise CertiverseServerError(
            f"Certiverse answered {response.request.url.path} with a body we cannot read: "
            f"{exc.error_count()} problem(s), first: {exc.errors()[0]['msg']} at "
            f"{'.'.join(str(p) for p in exc.errors()[0]['loc'])}",
            status_code=response.status_code,
        ) from exc


def _without_query(url: httpx.URL) -> str:
    return str(url.copy_with(query=None))


def _raise_for_final_status(response: httpx.Response, *, idempotent: bool, base: httpx.URL) -> None:
    """Raise the typed error of a failed response unless it is worth retrying."""
    status_code = response.status_code
    if status_code in {404, 405}:
        # No operation of the API answers 404/405 to a well-formed call: the path is wrong.
        raise CertiverseMisconfigured(
            f"{status_code} {response.reason_phrase}",
            status_code=status_code,
            url=f"{response.request.method} {_without_query(response.request.url)}",
            base_url=str(base),
        )
    if status_code == 401:
        raise CertiverseUnauthorized(_error_message(response))
    if status_code == 422:
        raise CertiverseRecordLimitExceeded(_error_message(response))
    if status_code >= 500 and not idempotent:
        raise PurchaseOutcomeUnknown(
            f"Certiverse answered {status_code} to the purchase POST; it may have been created",
            status_code=status_code,
        )
    if status_code != 429 and status_code < 500:
        raise CertiverseBadRequest(
            _error_message(response), status_code=status_code, body=_json_or_none(response)
        )


def _json_or_none(response: httpx.Response) -> object:
    try:
        return response.json()
    except ValueError:
        return None


def _error_message(response: httpx.Response) -> str:
    """The API's own words from an error body (problem JSON, {message}, or text)."""
    body = _json_or_none(response)
    if isinstance(body, dict):
        parts: list[str] = []
        for key in ("message", "title", "detail", "error"):
            value = body.get(key)
            if isinstance(value, str) and value and value not in parts:
                parts.append(value)
        errors = body.get("errors")
        if isinstance(errors, dict):
            for field, problems in errors.items():
                texts = problems if isinstance(problems, list) else [problems]
                parts.extend(f"{field}: {text}" for text in texts)
        elif isinstance(errors, list):
            parts.extend(str(e) for e in errors)
        if parts:
            return "; ".join(parts)
    text = response.text.strip()
    return text[:500] if text else response.reason_phrase
