"""Models given by URL (models on demand): which URLs are allowed (MODEL_URL_ALLOWLIST), and how they are
fetched (tokens, content types, MODEL_MAX_BYTES). What a value names is ``manifests.model_values``.

Used by the API (a refused URL is a 422 at submit) and by the workers (checked again, then downloaded
into the host's ``ModelCache`` and linked into ComfyUI's folder).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from urllib.parse import urlsplit

from comfyjobs.media.url_policy import UrlPolicy
from comfyjobs.provision.url_fetch import OnBytes, Transfer, fetch_url
from comfyjobs.settings import Settings, comma_list

_NOT_MODELS = ("text/", "image/", "video/", "audio/", "multipart/")
_NOT_MODEL_SUBTYPES = ("json", "xml", "html", "javascript")


def _not_a_model(content_type: str | None) -> str | None:
    if content_type is None:
        return None
    subtype = content_type.partition("/")[2]
    if content_type.startswith(_NOT_MODELS) or any(word in subtype for word in _NOT_MODEL_SUBTYPES):
        return f"the server sent {content_type}, not a model file (an error or login page?)"
    return None


def _host_matches(host: str, entry: str) -> bool:
    return host == entry or host.endswith("." + entry)


def _network(entry: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | tuple[()]:
    """An allowlist entry as a network; () (contains nothing) for a host name."""
    try:
        return ipaddress.ip_network(entry, strict=False)
    except ValueError:
        return ()


@dataclass(frozen=True)
class ModelUrls:
    """MODEL_URL_ALLOWLIST and the credentials for model hosts (HF_TOKEN, CIVITAI_TOKEN)."""

    allowlist: tuple[str, ...]
    max_bytes: int
    tokens: Mapping[str, str]  # host (and its sub-domains) -> bearer token

    @classmethod
    def from_settings(cls, settings: Settings) -> ModelUrls:
        tokens = {}
        if settings.hf_token is not None:
            tokens["huggingface.co"] = settings.hf_token.get_secret_value()
        if settings.civitai_token is not None:
            tokens["civitai.com"] = settings.civitai_token.get_secret_value()
        entries = tuple(e.strip().lower().rstrip(".") for e in comma_list(settings.model_url_allowlist))
        return cls(tuple(e for e in entries if e), settings.model_max_bytes, tokens)

    @cached_property
    def policy(self) -> UrlPolicy:
        """The SSRF guard: private addresses only for the hosts and networks listed."""
        return UrlPolicy(self.allowlist, setting="MODEL_URL_ALLOWLIST")

    def refusal(self, url: str) -> str | None:
        """Why a client may not give this URL as a model (None: it may; its addresses are checked when
        it is resolved)."""
        try:
            parts = urlsplit(url)
            host = (parts.hostname or "").lower().rstrip(".")
        except ValueError as exc:
            return f"not a valid URL: {exc}"
        if parts.scheme.lower() not in ("http", "https") or not host:
            return "must be an http(s) URL or a file name in the model folder"
        try:
            address = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            address = None
        for entry in self.allowlist:
            if address is None and _host_matches(host, entry):
                return None
            if address is not None and address in _network(entry):
                return None
        listed = ", ".join(self.allowlist) or "none"
        return f"host {host} is not in MODEL_URL_ALLOWLIST (allowed: {listed})"

    def headers_for(self, host: str) -> dict[str, str]:
        host = host.lower().rstrip(".")
        for domain, token in self.tokens.items():
            if _host_matches(host, domain):
                return {"Authorization": f"Bearer {token}"}
        return {}

    def transfer(self) -> Transfer:
        return Transfer(self.policy, headers_for=self.headers_for, refuse_type=_not_a_model)

    def download(self, url: str, final: Path, sha256: str | None, on_bytes: OnBytes) -> int:
        """A ``ModelCache`` download: resumable, verified, within MODEL_MAX_BYTES, through the guard."""
        return fetch_url(
            url, final, sha256=sha256, transfer=self.transfer(), show_progress=False,
            label=final.name, on_bytes=on_bytes, max_bytes=self.max_bytes,
        )  # fmt: skip


__all__ = ["ModelUrls"]
