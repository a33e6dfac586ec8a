"""``osma info``: the model, the reference store and the device in use."""

from __future__ import annotations

from osma_cli.cli import output
from osma_cli.cli.options import DeviceOpt, JsonOpt, ModelOpt, RefsOpt


def gather_info(model, refs, device: str) -> dict:
    """Everything ``info`` reports, as plain data; missing parts are reported, not fatal."""
    import dataclasses

    import torch

    import osma_cli
    from osma_cli.cli.references import store_summary
    from osma_cli.cli.session import model_path, refs_path
    from osma_cli.errors import OsmaError
    from osma_cli.home import osma_home, shipped_dir
    from osma_cli.regime_store import load_store
    from osma_cli.runtime import resolve_device
    from osma_cli.weights import read_meta

    info: dict = {
        "osma_version": osma_cli.__version__,
        "torch_version": torch.__version__,
        "device": str(resolve_device(device)),
        "cuda_available": torch.cuda.is_available(),
        "osma_home": str(osma_home()),
        "shipped_dir": str(shipped_dir()),
    }
    meta = None
    try:
        path = model_path(model)
        meta = read_meta(path)
        info["model"] = {"path": str(path), **dataclasses.asdict(meta)}
    except OsmaError as exc:
        info["model"] = {"error": str(exc)}
    if meta is not None and meta.is_classifier:
        from osma_cli.classifier import load_classifier_threshold, threshold_path

        try:
            tau = load_classifier_threshold(path, meta)
            tau_info = None if tau is None else tau.to_dict()
        except OsmaError as exc:
            tau_info = {"error": str(exc)}
        info["references"] = {"error": "none: a closed-set classifier's classes are in its weights"}
        info["classifier"] = {
            "classes": list(meta.class_names),
            "threshold": tau_info,
            "threshold_file": str(threshold_path(path)),
        }
        return info
    try:
        path = refs_path(refs, write=False, model=model)
        info["references"] = store_summary(load_store(path), path)
    except OsmaError as exc:
        info["references"] = {"error": str(exc)}
    return info


def flat_items(data: dict, prefix: str = "") -> list[tuple[str, object]]:
    """Nested metadata as ``(a.b.c, value)`` pairs: a recipe reads better as a list than a dict."""
    items: list[tuple[str, object]] = []
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            items += flat_items(value, f"{name}.")
        else:
            items.append((name, value))
    return items


BUILD_MACHINE = "(build machine)"


def is_build_path(value) -> bool:
    """An absolute path (or a list of them) in a recipe: a place on the machine that trained the model."""
    import os

    if isinstance(value, str):
        return os.path.isabs(value)
    return isinstance(value, list) and bool(value) and all(isinstance(v, str) and os.path.isabs(v) for v in value)


def model_rows(model_info: dict) -> list[list[str]]:
    """The model table: empty class names of a non-classifier left out, the recipe's paths
    marked as the build machine's (they name nothing on this one)."""
    shown = {
        k: v
        for k, v in model_info.items()
        if not (k == "class_names" and not v and model_info.get("kind") != "classifier")
    }
    rows = []
    for name, value in flat_items(shown):
        text = str(value)
        if name.startswith("recipe.") and is_build_path(value):
            text = f"{text} {BUILD_MACHINE}"
        elif name == "recipe.osma_tree_dirty" and value is True:
            text = "True (trained from uncommitted changes)"
        rows.append([name, text])
    return rows


def info(model: ModelOpt = None, refs: RefsOpt = None, device: DeviceOpt = "auto", json_out: JsonOpt = False) -> None:
    """Show the model, its recipe, the known generators, tau and the device."""
    data = gather_info(model, refs, device)
    if json_out:
        output.write_json(data, command="info")
        return
    rows = [[k, v] for k, v in data.items() if k not in ("model", "references", "classifier")]
    output.print_table(output.simple_table("osma", ["", ""], rows))
    model_info = data["model"]
    output.print_table(output.simple_table("model", ["field", "value"], model_rows(model_info)))
    refs_info = data["references"]
    if "classifier" in data:
        tau = data["classifier"]["threshold"]
        shown = "not set" if tau is None else tau.get("error") or f"{tau['value']:.4g} ({tau['method']})"
        output.print_table(
            output.simple_table(
                "closed-set classifier",
                ["field", "value"],
                [
                    ["classes", ", ".join(data["classifier"]["classes"])],
                    ["threshold (1 - max softmax)", shown],
                    ["threshold file", data["classifier"]["threshold_file"]],
                ],
            )
        )
    elif "error" in refs_info:
        output.print_table(output.simple_table("references", ["field", "value"], [["error", refs_info["error"]]]))
    else:
        gens = refs_info["generators"]
        tau = refs_info["threshold"]
        if "regimes" in refs_info:
            taus = ", ".join(
                f"{r['name']} {r['threshold']['value']:.4g}" if r["threshold"] else f"{r['name']} not set"
                for r in refs_info["regimes"]
            )
            caption = f"references: {refs_info['path']} (tau per regime: {taus})"
        elif tau:
            caption = f"references: {refs_info['path']} (tau {tau['value']:.4g})"
        else:
            caption = f"references: {refs_info['path']} (no threshold)"
        output.print_table(
            output.simple_table(
                caption, ["generator", "images", "sigma"], [[g["name"], g["count"], f"{g['sigma']:.4g}"] for g in gens]
            )
        )
