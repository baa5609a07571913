"""distillkit: dataset distillation in one composable, reproducible trainer."""

__version__ = "0.1.0"


def _expose_hydra_plugin() -> None:
    """Let Hydra's plugin scan see `hydra_plugins.distillkit_ipc` (any integer `ipc`).

    Hydra lists plugins with pkgutil over `hydra_plugins.__path__`; an editable install reaches
    the plugin through an import hook that pkgutil cannot list, so its folder is added to the
    namespace path here (a wheel install puts it in site-packages, where nothing changes).
    """
    import importlib.util
    from pathlib import Path

    try:
        spec = importlib.util.find_spec("hydra_plugins.distillkit_ipc")
    except ImportError:
        return
    if spec is None or spec.origin is None:
        return
    import hydra_plugins

    folder = str(Path(spec.origin).resolve().parents[1])
    if folder not in [str(p) for p in hydra_plugins.__path__]:
        hydra_plugins.__path__.append(folder)


def _register_resolvers() -> None:
    """`${distillkit.when:FLAG,TEXT}`: TEXT when FLAG is true, else "" (buffer names take `_flip`
    under `dsa.always_flip`; OmegaConf has no conditional of its own); and
    `${distillkit.per_dataset:NAME,TABLE,DEFAULT}`."""
    try:
        from omegaconf import OmegaConf
    except ImportError:
        return
    if not OmegaConf.has_resolver("distillkit.when"):
        OmegaConf.register_new_resolver(
            "distillkit.when", lambda flag, text: str(text) if _truthy(flag) else ""
        )
    if not OmegaConf.has_resolver("distillkit.per_dataset"):
        OmegaConf.register_new_resolver("distillkit.per_dataset", _per_dataset)


def _per_dataset(name: object, table: object, default: object) -> object:
    """`${distillkit.per_dataset:${dataset.name},{mnist: 1000},300}`: a published value that
    differs on some datasets (DC evaluates MNIST for 1000 epochs, the rest for 300)."""
    return table.get(str(name), default) if hasattr(table, "get") else default


def _truthy(flag: object) -> bool:
    return flag is True or str(flag).strip().lower() == "true"


_expose_hydra_plugin()
_register_resolvers()
