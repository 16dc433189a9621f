"""Reading and writing X-SAM weights, strictly.

Two layouts load: this implementation's ``model.safetensors`` + ``config.json`` (``save_pretrained``,
``python -m xsam.convert``) and the official ``pytorch_model.bin`` (X-SAM archive branch, the published
Phi-3 model). Official keys are renamed by :data:`KEY_MAPPING`; unlike X-SAM's own loader, which skips
keys that do not match, any missing, unexpected or mis-shaped key fails the load and is named.
Pickled ``.bin`` files are read with ``torch.load(weights_only=True)``, which refuses anything but tensors.
"""

from __future__ import annotations

import contextlib
import json
import pickle
import re
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from transformers.initialization import no_init_weights

from xsam.configuration_xsam import XSamConfig

SAFETENSORS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"

#: Official checkpoint key (X-SAM archive branch)      -> this implementation's key.
#: Rows ending in "." rename a prefix, others a whole key; ``{n}`` is a branch index. Every official key must
#: match exactly one row (or :data:`UNUSED_OFFICIAL_PREFIXES`), every model key must be produced by one.
KEY_MAPPING: tuple[tuple[str, str], ...] = (
    ("llm.", "llm."),  # transformers Phi3ForCausalLM
    ("visual_encoder.vision_model.", "visual_encoder."),  # transformers 5 flattened SiglipVisionModel
    ("segmentor.encoder.", "segmentor.encoder."),  # transformers SamVisionEncoder (neck loaded, unused)
    ("segmentor.pixel_decoder.", "segmentor.pixel_decoder."),  # transformers Mask2FormerPixelDecoder
    ("segmentor.decoder.", "segmentor.decoder."),  # transformers Mask2FormerTransformerModule + <SEG>
    ("segmentor.logit_scale", "segmentor.class_head.logit_scale"),
    ("bg_embeds.weight", "segmentor.class_head.background.weight"),
    ("seg_connector.model.{n}.model.0.", "seg_connector.branches.{n}.conv1."),
    ("seg_connector.model.{n}.model.1.", "seg_connector.branches.{n}.layer_norm1."),
    ("seg_connector.model.{n}.model.2.", "seg_connector.branches.{n}.conv2."),
    ("seg_connector.model.{n}.model.3.", "seg_connector.branches.{n}.layer_norm2."),
    ("seg_connector.model.{n}.model.4.", "seg_connector.branches.{n}.conv3."),
    ("seg_connector.model.{n}.model.5.", "seg_connector.branches.{n}.layer_norm3."),
    ("visual_projector.model.0.", "visual_projector.linear_1."),
    ("visual_projector.model.2.", "visual_projector.linear_2."),
    ("seg_projector.model.0.", "seg_projector.linear_1."),
    ("seg_projector.model.2.", "seg_projector.linear_2."),
    ("llm_projector.model.0.", "llm_projector.linear_1."),
    ("llm_projector.model.2.", "llm_projector.linear_2."),
)

#: Official modules X-SAM builds but never uses at inference (SAM's prompt position encoding, the training
#: loss's class weights). Their keys are accepted when present and dropped.
UNUSED_OFFICIAL_PREFIXES = ("segmentor.shared_image_embedding.", "segmentor.criterion.")


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded as X-SAM; the message names the file and every offending key."""


def _compile(pattern: str) -> re.Pattern:
    regex = re.escape(pattern).replace(re.escape("{n}"), r"(?P<n>\d+)")
    return re.compile(f"^{regex}" if pattern.endswith(".") else f"^{regex}$")


_OFFICIAL_TO_OURS = [(_compile(official), ours) for official, ours in KEY_MAPPING]
_OURS_TO_OFFICIAL = [(_compile(ours), official) for official, ours in KEY_MAPPING]


def _rename(key: str, rules: list[tuple[re.Pattern, str]]) -> str | None:
    matches = [(m, target) for pattern, target in rules if (m := pattern.match(key))]
    if len(matches) != 1:
        return None
    match, target = matches[0]
    return target.replace("{n}", match.groupdict().get("n") or "") + key[match.end() :]


def official_to_ours(key: str) -> str | None:
    """This implementation's name for an official key; None when no row of :data:`KEY_MAPPING` matches."""
    return _rename(key, _OFFICIAL_TO_OURS)


def ours_to_official(key: str) -> str | None:
    return _rename(key, _OURS_TO_OFFICIAL)


def official_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's weights under official key names (what X-SAM's ``torch.save`` would have written)."""
    return {ours_to_official(k): v for k, v in model.state_dict().items()}


# --- reading ------------------------------------------------------------------------------------------------------


def read_official_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of an official ``.bin`` (memory-mapped), refusing pickled code."""
    path = Path(path)
    try:
        with contextlib.suppress(RuntimeError):  # legacy (non-zip) pickles cannot be memory-mapped
            return _as_state_dict(torch.load(path, map_location="cpu", weights_only=True, mmap=True), path)
        return _as_state_dict(torch.load(path, map_location="cpu", weights_only=True), path)
    except pickle.UnpicklingError as error:
        raise CheckpointError(
            f"{path}: refused to unpickle it: the file holds Python objects other than tensors, which could run "
            f"code when loaded (torch.load weights_only=True: {_first_line(error)})"
        ) from None
    except (RuntimeError, EOFError, OSError) as error:
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({_first_line(error)})") from None


def _first_line(error: BaseException) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def _as_state_dict(loaded: object, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(loaded, Mapping) and set(loaded) == {"state_dict"}:
        loaded = loaded["state_dict"]
    if not isinstance(loaded, Mapping) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise CheckpointError(f"{path}: not a state dict of tensors (got {type(loaded).__name__})")
    return dict(loaded)


def config_for_official_state(state: Mapping[str, torch.Tensor], base: XSamConfig | None = None) -> XSamConfig:
    """The config an official state dict needs: ``base`` (default: the published model) with the facts the
    weights themselves fix: vocabulary size, connector conv biases, and whether SigLIP's pooling head is there."""
    config = XSamConfig.from_dict(base.to_dict()) if base is not None else XSamConfig()
    embeddings = state.get("llm.model.embed_tokens.weight")
    if embeddings is None:
        raise CheckpointError("missing key llm.model.embed_tokens.weight: cannot read the vocabulary size")
    config.text_config.vocab_size = int(embeddings.shape[0])
    config.connector_config.bias = "seg_connector.model.0.model.0.bias" in state
    config.siglip_config.vision_use_head = any(k.startswith("visual_encoder.vision_model.head.") for k in state)
    return config


def map_official_state(state: Mapping[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    """Rename every official key; unknown keys fail, naming them."""
    mapped, unknown = {}, []
    for key, tensor in state.items():
        if key.startswith(UNUSED_OFFICIAL_PREFIXES):
            continue
        ours = official_to_ours(key)
        if ours is None:
            unknown.append(key)
        else:
            mapped[ours] = tensor
    if unknown:
        raise CheckpointError(
            f"{source}: {len(unknown)} unexpected key(s) not in the X-SAM key mapping: {_list(unknown)}"
        )
    return mapped


def check_state(expected: Mapping[str, torch.Size], found: Mapping[str, torch.Size], source: str) -> None:
    """Compare key -> shape maps; raise naming every missing, unexpected and mis-shaped key (all at once)."""
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    mismatched = [
        f"{k} (checkpoint {tuple(found[k])}, model {tuple(expected[k])})"
        for k in sorted(set(expected) & set(found))
        if tuple(found[k]) != tuple(expected[k])
    ]
    kinds = (("missing key(s)", missing), ("unexpected key(s)", unexpected), ("shape mismatch(es)", mismatched))
    problems = [f"{len(items)} {what}: {_list(items)}" for what, items in kinds if items]
    if problems:
        raise CheckpointError(f"{source}: " + "; ".join(problems))


def _list(items: list[str], limit: int = 20) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")


# --- model loading ----------------------------------------------------------------------------------------------


def resolve_local_path(path_or_hub_id: str | Path) -> Path:
    """A local file or directory; ``owner/name`` (or ``owner/name/path/in/repo``) comes from the Hugging Face Hub."""
    path = Path(path_or_hub_id)
    if path.exists():
        return path
    text = str(path_or_hub_id)
    if text.startswith((".", "/", "~")) or text.count("/") < 1:
        raise CheckpointError(f"{text}: no such file or directory")
    owner, name, *rest = text.split("/")
    repo_id, filename = f"{owner}/{name}", "/".join(rest)
    try:
        from huggingface_hub import hf_hub_download, snapshot_download

        return Path(hf_hub_download(repo_id, filename) if filename else snapshot_download(repo_id))
    except Exception as error:  # noqa: BLE001 - any hub failure means the same thing to the caller
        raise CheckpointError(
            f"{text}: not a local path, and the Hugging Face Hub could not provide it "
            f"({type(error).__name__}: {_first_line(error)}). "
            "Download it where the Hub is reachable and pass the local path."
        ) from None


def default_device_and_dtype(
    device: str | torch.device | None, dtype: torch.dtype | None
) -> tuple[torch.device, torch.dtype]:
    """CUDA in bfloat16 when available, otherwise CPU in float32."""
    device = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
    if dtype is None:
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    return device, dtype


@contextlib.contextmanager
def _allocating(device: torch.device, dtype: torch.dtype) -> Iterator[None]:
    """Build modules directly on ``device`` in ``dtype`` without random init (the checkpoint fills everything)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with no_init_weights(), device:
            yield
    finally:
        torch.set_default_dtype(previous)


def _read_config(directory: Path) -> XSamConfig | None:
    config_file = directory / CONFIG_NAME
    if not config_file.is_file():
        return None
    try:
        config = json.loads(config_file.read_bytes())
    except ValueError as error:  # JSONDecodeError and UnicodeDecodeError alike
        raise CheckpointError(f"{config_file}: not a readable JSON config ({_first_line(error)})") from None
    if not isinstance(config, dict) or config.get("model_type") != XSamConfig.model_type:
        return None
    return XSamConfig.from_pretrained(str(directory))


def load_model(
    model_class: Callable[[XSamConfig], torch.nn.Module],
    path_or_hub_id: str | Path,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    config: XSamConfig | None = None,
):
    """Build ``model_class`` and fill it from a directory (ours), a ``.safetensors`` file (ours) or a ``.bin``
    (official; its config is ``config``, else an X-SAM ``config.json`` beside it, else the published model's)."""
    path = resolve_local_path(path_or_hub_id)
    device, dtype = default_device_and_dtype(device, dtype)
    weights = path / SAFETENSORS_NAME if path.is_dir() else path
    if not weights.is_file():
        raise CheckpointError(f"{path}: no {SAFETENSORS_NAME} in this directory")
    with contextlib.ExitStack() as stack:
        if weights.suffix == ".safetensors":
            config = config or _read_config(weights.parent)
            if config is None:
                raise CheckpointError(f"{weights.parent}: no X-SAM {CONFIG_NAME} beside {weights.name}")
            try:
                handle = stack.enter_context(safe_open(str(weights), framework="pt"))
                shapes = {k: handle.get_slice(k).get_shape() for k in handle.keys()}
            except SafetensorError as error:
                raise CheckpointError(f"{weights}: not a readable safetensors file ({_first_line(error)})") from None
            read = handle.get_tensor  # one tensor at a time: peak memory stays near the model's size
        else:
            official = read_official_checkpoint(weights)
            config = config_for_official_state(official, config or _read_config(weights.parent))
            state = map_official_state(official, str(weights))
            shapes, read = {k: v.shape for k, v in state.items()}, state.__getitem__

        with _allocating(device, dtype):
            model = model_class(config)
        # ``to`` catches parameters created with legacy constructors that ignore the default device.
        model.to(device).set_inference_dtype(dtype)
        targets = model.state_dict(keep_vars=True)
        check_state({k: v.shape for k, v in targets.items()}, shapes, str(weights))
        with torch.no_grad():
            for key, target in targets.items():
                target.copy_(read(key))
    return model.eval()


def save_model(model: torch.nn.Module, save_directory: str | Path) -> None:
    directory = Path(save_directory)
    directory.mkdir(parents=True, exist_ok=True)
    model.config.save_pretrained(str(directory))
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, str(directory / SAFETENSORS_NAME), metadata={"format": "pt"})
