"""A config source that generates `ipc/<N>.yaml` (`ipc: N` at the top level) for any N >= 1."""

from __future__ import annotations

import re

from hydra.core.config_search_path import ConfigSearchPath
from hydra.core.object_type import ObjectType
from hydra.plugins.config_source import ConfigLoadError, ConfigResult, ConfigSource
from hydra.plugins.search_path_plugin import SearchPathPlugin
from omegaconf import OmegaConf

GROUP = "ipc"
#: The choices `--help` lists (any other positive integer works as well).
LISTED = (1, 2, 3, 5, 10, 20, 30, 40, 50, 100, 200, 500, 1000)
#: Search-path entries of the Hydra apps this plugin serves (other apps are left alone).
APP_CONFIG_PATHS = ("pkg://distillkit.conf",)

_CHOICE = re.compile(rf"^{GROUP}/([1-9]\d*)(\.yaml)?$")


class IpcConfigSource(ConfigSource):
    """`ipc/7` -> `# @package _global_` `ipc: 7`; the group itself is `ipc`."""

    @staticmethod
    def scheme() -> str:
        return "distillkit-ipc"

    def load_config(self, config_path: str) -> ConfigResult:
        match = _CHOICE.match(config_path)
        if match is None:
            raise ConfigLoadError(f"Config not found: {config_path} (ipc must be an integer >= 1)")
        return ConfigResult(
            config=OmegaConf.create({"ipc": int(match.group(1))}),
            path=f"{self.scheme()}://{self.path}",
            provider=self.provider,
            header={"package": "_global_"},
        )

    def available(self) -> bool:
        return True

    def is_group(self, config_path: str) -> bool:
        return config_path.strip("/") in ("", GROUP)

    def is_config(self, config_path: str) -> bool:
        return _CHOICE.match(config_path.strip("/")) is not None

    def list(self, config_path: str, results_filter: ObjectType | None) -> list[str]:
        path = config_path.strip("/")
        if path == "" and results_filter in (None, ObjectType.GROUP):
            return [GROUP]
        if path == GROUP and results_filter in (None, ObjectType.CONFIG):
            return sorted(str(n) for n in LISTED)
        return []


class IpcSearchPath(SearchPathPlugin):
    """Adds the ipc source to distillkit's apps (after their own config, so a file wins)."""

    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        paths = {element.path for element in search_path.get_path()}
        if paths.intersection(APP_CONFIG_PATHS):
            search_path.append(provider="distillkit-ipc", path=f"{IpcConfigSource.scheme()}://")
