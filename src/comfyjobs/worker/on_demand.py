"""The models a job needs fetched before it runs: its model parameters given as URLs, and the files its
workflow's `models` list names that this host lacks. Each comes from the host's ``ModelCache`` (one
download per host, held in use until the job ends) and is linked into ComfyUI's model folder: a URL under
``on-demand/<key>-<name>`` (``model_refs.linked_name``, the name the graph was built with), a listed model
under the name its template loads.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from comfyjobs.errors import ModelDownloadError
from comfyjobs.manifests.model_values import ON_DEMAND, ModelSource, linked_name, source_of
from comfyjobs.manifests.registry import Workflow
from comfyjobs.manifests.schema import ModelSpec
from comfyjobs.provision.model_cache import ModelCache
from comfyjobs.provision.model_refs import ModelUrls
from comfyjobs.provision.url_fetch import OnBytes

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelsHere:
    """Of the models jobs may need downloaded, what this host has (jobs.queue ``Affinity``)."""

    on_disk: frozenset[str] = frozenset()  # URL models linked here (``on-demand/<key>-<name>``)
    lacking: frozenset[str] = frozenset()  # models a workflow lists that are not here yet


class OnDemandModels:
    def __init__(
        self,
        cache: ModelCache,
        urls: ModelUrls,
        model_dir: Path,
        shared_dir: Path | None = None,
        on_fetched: Callable[[], None] = lambda: None,
    ) -> None:
        self.cache = cache
        self.urls = urls
        self._model_dir = model_dir
        self._shared_dir = shared_dir
        self._on_fetched = on_fetched  # a file was downloaded: capabilities may have changed
        self._workflows: tuple[Workflow, ...] = ()
        self.here = ModelsHere()  # (replaced whole: readers need no lock)

    def fetchable(self, model: ModelSpec) -> bool:
        """Whether this worker may download a listed model (its URL's host is allowed here)."""
        return self.urls.refusal(model.url) is None

    def look(self, workflows: Iterable[Workflow] | None = None) -> ModelsHere:
        """What is on this host's disk of the models ``workflows`` (else the last ones looked at) may
        have downloaded, for the take's affinity: the URL models linked here, and the listed models it
        lacks."""
        if workflows is not None:
            self._workflows = tuple(workflows)
        on_disk = set()
        for folder in self._model_dir.glob(f"*/{ON_DEMAND}"):
            on_disk |= {f"{ON_DEMAND}/{p.name}" for p in folder.iterdir() if p.is_symlink() and p.exists()}
        lacking = {
            model.name
            for workflow in self._workflows
            for model in workflow.models
            if not self._placed(f"{model.folder}/{model.name}")
            and not (self._model_dir / model.folder / model.name).exists()  # (nor linked, downloaded)
        }
        self.here = ModelsHere(frozenset(on_disk), frozenset(lacking))
        return self.here

    def _placed(self, relative: str) -> bool:
        """A listed model the operator put in place (in the model folder, or the shared tree)."""
        here = self._model_dir / relative
        shared = self._shared_dir / relative if self._shared_dir is not None else None
        return (here.is_file() and not here.is_symlink()) or (shared is not None and shared.is_file())

    def _wanted(self, workflow: Workflow, params: dict[str, Any]) -> list[tuple[str, str, ModelSource]]:
        """(field, link path under the model folder, source) of each model to have in place."""
        wanted = []
        for param in workflow.model_parameters:
            value = param.value if param.fixed else params.get(param.name)
            source = source_of(value)
            if source is not None and param.folder is not None:
                wanted.append((f"params.{param.name}", f"{param.folder}/{linked_name(source)}", source))
        for model in workflow.models:
            relative = f"{model.folder}/{model.name}"
            if self._placed(relative):
                continue  # placed by the operator: used as it is
            wanted.append((f"models.{model.name}", relative, ModelSource(model.url, model.sha256)))
        return wanted

    @contextlib.contextmanager
    def prepared(
        self, workflow: Workflow | None, params: dict[str, Any], on_bytes: OnBytes
    ) -> Iterator[None]:
        """Every model the job needs in ComfyUI's folders, held in the cache (never evicted) until the
        block ends (``workflow`` None, a raw graph: none). Raises ModelDownloadError naming the
        parameter or model and why."""
        wanted = [] if workflow is None else self._wanted(workflow, params)
        if not wanted:
            yield
            return
        fetched = False

        def counting(done: int, total: int | None) -> None:
            nonlocal fetched
            fetched = True
            on_bytes(done, total)

        with contextlib.ExitStack() as held:
            for field, relative, source in wanted:
                refused = self.urls.refusal(source.url)
                if refused is not None:
                    raise ModelDownloadError(f"{field}: {refused}")
                try:
                    path = held.enter_context(self.cache.use(source, counting))
                except ModelDownloadError as exc:
                    raise ModelDownloadError(f"{field}: {exc.message}") from None
                _link(self._model_dir / relative, path)
            if fetched:
                self.prune_links()
                self.look()
                self._on_fetched()
            yield

    def prune_links(self) -> list[Path]:
        """Removes the links into the cache whose file was evicted; returns them."""
        gone = []
        cache_root = str(self.cache.root.resolve())
        for dirpath, _dirs, files in os.walk(self._model_dir):
            for name in files:
                path = Path(dirpath) / name
                if not path.is_symlink():
                    continue
                target = str(path.readlink())
                if target.startswith(cache_root) and not path.exists():
                    path.unlink(missing_ok=True)
                    gone.append(path)
        return gone


def _link(link: Path, target: Path) -> None:
    """``link`` → ``target``, replaced atomically when it points elsewhere (concurrent jobs agree)."""
    target = target.resolve()
    with contextlib.suppress(OSError):
        if link.is_symlink() and link.readlink() == target:
            return
    link.parent.mkdir(parents=True, exist_ok=True)
    temporary = link.with_name(f".{link.name}.{os.getpid()}.{threading.get_ident()}.link")
    temporary.unlink(missing_ok=True)
    temporary.symlink_to(target)
    temporary.replace(link)
    log.info("model %s linked into ComfyUI's folder", link)
