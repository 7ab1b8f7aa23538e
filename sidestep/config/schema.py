"""The one description of every Side-Step setting.

The CLI parser, the TUI form, preset validation and the engine's frozen config are all built from
``SETTINGS``. Nothing here imports torch, textual or rich: the CLI's ``--help`` must stay instant.

Each ``Setting`` says what a value is (kind, default, choices, range), where it is shown (group,
Basic/Advanced, label, help), how it is spelt on the command line (flags), which subcommands take
it, whether presets carry it, and how its default moves with the platform or the model variant.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

# Subcommands that train. They share one config class (``TrainingConfig``).
TRAIN_MODES = ("fixed", "vanilla", "selective")
# The projections of each attention block that adapters can target (DiT names).
PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj")
PEFT_ADAPTERS = ("lora", "dora")        # trained and saved by PEFT
LYCORIS_ADAPTERS = ("lokr", "loha")     # trained and saved by LyCORIS
ADAPTER_TYPES = (*PEFT_ADAPTERS, *LYCORIS_ADAPTERS)
COMMANDS = TRAIN_MODES + ("estimate", "preprocess", "build-dataset", "compare-configs")

# Value kinds. "path" is a str that names a file or folder; lists are of plain strings.
KINDS = ("int", "float", "str", "bool", "path", "str_list", "path_list")

BASIC = "basic"
ADVANCED = "advanced"

_T = TRAIN_MODES
_FIXED_SELECTIVE = ("fixed", "selective")
_SEL = ("selective",)
_SEL_EST = ("selective", "estimate")


@dataclass(frozen=True)
class Setting:
    name: str
    kind: str
    default: Any
    help: str
    group: str
    commands: tuple[str, ...]
    flags: tuple[str, ...] = ()
    level: str = ADVANCED
    label: str = ""
    choices: tuple[Any, ...] | None = None
    minimum: float | None = None
    maximum: float | None = None
    # Whether the bound is inclusive; most are.
    exclusive_minimum: bool = False
    nullable: bool = False
    required: bool = False
    # A switch that makes a required setting optional: with it on, the value comes another
    # way (--dataset-dir is --tensor-output with --preprocess).
    required_unless: str | None = None
    preset: bool = False
    # Name of the key in a preset file when it differs from ``name`` (spec 000).
    preset_key: str | None = None
    # Default on Windows, where DataLoader worker processes are not usable.
    windows_default: Any = None
    # Defaults that follow the model family ("turbo" or "base"; sft uses "base").
    variant_defaults: Mapping[str, Any] | None = None
    # Show in the form only when another setting has one of these values.
    shown_when: tuple[str, tuple[Any, ...]] | None = None
    metavar: str | None = None
    # Help where a command does something else with the value than ``help`` says (keyed by
    # command, e.g. "estimate"): one setting, but each --help describes its own use.
    command_help: Mapping[str, str] | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"setting {self.name}: unknown kind {self.kind!r}")
        if not self.flags:
            object.__setattr__(self, "flags", ("--" + self.name.replace("_", "-"),))
        if not self.label:
            object.__setattr__(self, "label", self.name.replace("_", " ").capitalize())
        if self.default is None and not self.required:
            object.__setattr__(self, "nullable", True)

    @property
    def is_list(self) -> bool:
        return self.kind in ("str_list", "path_list")

    @property
    def file_key(self) -> str:
        """Key used for this setting in preset files."""
        return self.preset_key or self.name

    def help_for(self, command: str | None = None) -> str:
        """The help text for ``command``'s --help (``help`` where it has no wording of its own)."""
        return (self.command_help or {}).get(command or "", self.help)

    def default_for(self, *, windows: bool = False, family: str | None = None) -> Any:
        """The default once platform and model family are known."""
        if family and self.variant_defaults:
            key = "turbo" if family == "turbo" else "base"
            if key in self.variant_defaults:
                return self.variant_defaults[key]
        if windows and self.windows_default is not None:
            return self.windows_default
        return self.default


def _s(name: str, kind: str, default: Any, help: str, group: str, commands, **kw) -> Setting:
    return Setting(name=name, kind=kind, default=default, help=help, group=group,
                   commands=tuple(commands), **kw)


SETTINGS: tuple[Setting, ...] = (
    # --- Model / Paths -------------------------------------------------------------------------
    _s("checkpoint_dir", "path", None, "Checkpoints root folder (holds acestep-v15-turbo/, vae/, "
       "Qwen3-Embedding-0.6B/, ...).", "Model / Paths", _T + ("estimate", "preprocess"),
       required=True, level=BASIC, label="Checkpoint directory", metavar="DIR"),
    _s("model_variant", "str", "turbo", "Model variant or folder name under the checkpoint root. "
       "Official: turbo, base, sft, xl-turbo, xl-base, xl-sft. For a fine-tune, its folder name.",
       "Model / Paths", _T + ("estimate", "preprocess"), level=BASIC, label="Model",
       metavar="NAME"),
    _s("base_model", "str", None, "Base model a fine-tune was trained from (turbo, base or sft). "
       "Sets timestep and CFG defaults. Detected automatically for official models.",
       "Model / Paths", _T + ("estimate",), choices=("turbo", "base", "sft"),
       label="Base model (fine-tunes)"),
    # --- Device / Platform ---------------------------------------------------------------------
    _s("device", "str", "auto", "Device: auto, cuda, cuda:N, mps, xpu, cpu. auto picks "
       "CUDA > MPS > XPU > CPU.", "Device / Platform", _T + ("estimate", "preprocess"),
       label="Device"),
    _s("precision", "str", "auto", "Floating-point precision. auto: bf16 on CUDA with compute "
       "capability >= 8.0 (else fp16), fp16 on MPS, fp32 on CPU.", "Device / Platform",
       _T + ("estimate", "preprocess"), choices=("auto", "bf16", "fp16", "fp32"),
       label="Precision"),
    _s("devices", "str", "1", "Devices to train on in data parallel: a number, or auto (every "
       "GPU of this box). Each device takes --batch-size samples per micro-batch, so the "
       "effective batch is batch size x devices x accumulation. With --device cpu, N processes.",
       "Device / Platform", _T, label="Devices", metavar="N|auto"),
    _s("num_nodes", "int", 1, "Machines in a multi-node run (start it with torchrun on each "
       "one).", "Device / Platform", _T, minimum=1, maximum=1024, label="Nodes"),
    _s("strategy", "str", "auto", "Parallel strategy: auto (DDP when devices or nodes > 1) or "
       "ddp (also with one device: the same per-sample noise as a multi-device run).",
       "Device / Platform", _T, choices=("auto", "ddp"), label="Strategy"),
    # --- Data ----------------------------------------------------------------------------------
    _s("dataset_dir", "path", None, "Folder of preprocessed .pt files (optionally with "
       "manifest.json). With --preprocess: --tensor-output, and no other folder.", "Data",
       _T + ("estimate",), required=True, required_unless="preprocess", level=BASIC,
       label="Dataset directory", metavar="DIR",
       command_help={"estimate": "Folder of preprocessed .pt files (optionally with "
                                 "manifest.json) whose batches the modules are ranked on."}),
    _s("num_workers", "int", 4, "DataLoader worker processes (0 loads in the training process).",
       "Data", _T + ("estimate",), minimum=0, maximum=64, windows_default=0, label="Workers"),
    _s("pin_memory", "bool", True, "Pin loaded tensors in page-locked memory for faster GPU "
       "transfer.", "Data", _T, label="Pin memory"),
    _s("prefetch_factor", "int", 2, "Batches each worker loads ahead (ignored with 0 workers).",
       "Data", _T, minimum=0, maximum=64, windows_default=0, label="Prefetch factor"),
    _s("persistent_workers", "bool", True, "Keep DataLoader workers alive between epochs.",
       "Data", _T, windows_default=False, label="Persistent workers"),
    # --- Training ------------------------------------------------------------------------------
    _s("learning_rate", "float", 1e-4, "Initial learning rate. Use 1.0 with Prodigy.", "Training",
       _T, flags=("--lr", "--learning-rate"), minimum=0.0, exclusive_minimum=True, maximum=10.0,
       level=BASIC, preset=True, label="Learning rate"),
    _s("batch_size", "int", 1, "Samples per step.", "Training", _T + ("estimate",), minimum=1,
       maximum=256, level=BASIC, preset=True, label="Batch size"),
    _s("gradient_accumulation", "int", 4, "Micro-batches per optimizer step. Effective batch = "
       "batch size x this.", "Training", _T, minimum=1, maximum=1024, level=BASIC, preset=True,
       label="Gradient accumulation"),
    _s("epochs", "int", 100, "Full passes over the dataset.", "Training", _T, minimum=1,
       maximum=100000, level=BASIC, preset=True, label="Max epochs"),
    _s("warmup_steps", "int", 100, "Optimizer steps over which the LR ramps from 10% to 100%.",
       "Training", _T, minimum=0, maximum=1_000_000, level=BASIC, preset=True,
       label="Warmup steps"),
    _s("weight_decay", "float", 0.01, "Decoupled weight decay (AdamW-style).", "Training", _T,
       minimum=0.0, maximum=1.0, preset=True, label="Weight decay"),
    _s("max_grad_norm", "float", 1.0, "Gradient clipping norm (0 turns clipping off).",
       "Training", _T, minimum=0.0, maximum=1000.0, preset=True, label="Max grad norm"),
    _s("seed", "int", 42, "Random seed: same seed and data give the same run.", "Training",
       _T + ("estimate",), minimum=0, maximum=2**32 - 1, level=BASIC, preset=True, label="Seed"),
    _s("chunk_duration", "int", None, "Train on a random window of this many seconds of each "
       "song per step (augmentation and memory savings). 60 recommended; below 60 may hurt "
       "quality. Empty: whole songs.", "Training", _T, minimum=1, maximum=3600, preset=True,
       label="Chunk duration (s)", metavar="SECONDS",
       command_help={"check-dataset": "The --chunk-duration you will train with: songs shorter "
                                      "than this many seconds are reported (they are trained "
                                      "whole)."}),
    _s("shift", "float", 3.0, "Noise-schedule shift (turbo 3.0, base/sft 1.0). Vanilla mode "
       "builds its discrete timestep schedule from it.", "Training", _T, minimum=0.0,
       exclusive_minimum=True, maximum=100.0, preset=True,
       variant_defaults={"turbo": 3.0, "base": 1.0}, label="Shift"),
    _s("num_inference_steps", "int", 8, "Inference steps of the timestep schedule (turbo 8, "
       "base/sft 50).", "Training", _T, minimum=1, maximum=1000, preset=True,
       variant_defaults={"turbo": 8, "base": 50}, label="Inference steps"),
    _s("optimizer_type", "str", "adamw", "adamw, adamw8bit (less optimizer memory), adafactor "
       "(minimal state), prodigy (tunes the LR itself: set LR 1.0).", "Training", _T,
       choices=("adamw", "adamw8bit", "adafactor", "prodigy"), preset=True, label="Optimizer"),
    _s("scheduler_type", "str", "cosine", "LR curve after warmup.", "Training", _T,
       choices=("cosine", "cosine_restarts", "linear", "constant", "constant_with_warmup"),
       preset=True, label="Scheduler"),
    _s("gradient_checkpointing", "bool", True, "Recompute activations in the backward pass: "
       "~40-60% less activation memory, ~10-30% slower.", "Training", _T, preset=True,
       label="Gradient checkpointing"),
    _s("offload_encoder", "bool", False, "Keep the condition encoder, VAE and text encoder off "
       "the training device (training from preprocessed tensors never needs them there).",
       "Training", _T, preset=True, label="Offload encoder"),
    # --- Adapter -------------------------------------------------------------------------------
    _s("adapter_type", "str", "lora", "lora (PEFT), dora (PEFT LoRA with weight "
       "decomposition: a learned magnitude per output row), lokr or loha (LyCORIS Kronecker or "
       "Hadamard products).", "Adapter", _T,
       choices=ADAPTER_TYPES, level=BASIC, preset=True, label="Adapter type"),
    # --- LoRA ----------------------------------------------------------------------------------
    _s("rank", "int", 64, "LoRA rank: more capacity, more memory.", "LoRA", _T,
       flags=("-r", "--rank"), minimum=1, maximum=1024, level=BASIC, preset=True,
       shown_when=("adapter_type", PEFT_ADAPTERS), label="Rank"),
    _s("alpha", "int", 128, "LoRA alpha (scale = alpha / rank). Usually 2x rank.", "LoRA", _T,
       minimum=1, maximum=4096, level=BASIC, preset=True,
       shown_when=("adapter_type", PEFT_ADAPTERS), label="Alpha"),
    _s("dropout", "float", 0.1, "Dropout on the LoRA path. Higher for tiny datasets.", "LoRA",
       _T, minimum=0.0, maximum=0.9, level=BASIC, preset=True,
       shown_when=("adapter_type", PEFT_ADAPTERS), label="Dropout"),
    _s("target_modules", "str_list", PROJECTIONS,
       "Projections inside each attention block that get an adapter.", "LoRA", _T,
       level=BASIC, preset=True, preset_key="target_modules_str",
       choices=PROJECTIONS, label="Target projections",
       metavar="PROJ"),
    _s("bias", "str", "none", "Train biases: none, all, lora_only.", "LoRA", _T,
       choices=("none", "all", "lora_only"), preset=True,
       shown_when=("adapter_type", PEFT_ADAPTERS), label="Bias"),
    _s("attention_type", "str", "both", "Attention layers to adapt: self (audio patterns), "
       "cross (text conditioning) or both.", "LoRA", _T, choices=("self", "cross", "both"),
       level=BASIC, preset=True, label="Attention type"),
    _s("self_target_modules", "str_list", None, "Projections for self-attention only (with "
       "--attention-type both).", "LoRA", _T, preset=True,
       choices=PROJECTIONS, label="Self-attention projections",
       shown_when=("attention_type", ("both",)), metavar="PROJ"),
    _s("cross_target_modules", "str_list", None, "Projections for cross-attention only (with "
       "--attention-type both).", "LoRA", _T, preset=True,
       choices=PROJECTIONS, label="Cross-attention projections",
       shown_when=("attention_type", ("both",)), metavar="PROJ"),
    # --- LoKR ----------------------------------------------------------------------------------
    _s("lokr_linear_dim", "int", 64, "LoKR linear dimension (like LoRA rank).", "LoKR", _T,
       minimum=1, maximum=10000, level=BASIC, preset=True,
       shown_when=("adapter_type", ("lokr",)), label="Linear dimension"),
    _s("lokr_linear_alpha", "int", 128, "LoKR linear alpha (keep at 2x linear dim).", "LoKR", _T,
       minimum=1, maximum=20000, level=BASIC, preset=True,
       shown_when=("adapter_type", ("lokr",)), label="Linear alpha"),
    _s("lokr_factor", "int", -1, "Kronecker factor (-1 picks automatically).", "LoKR", _T,
       minimum=-1, maximum=4096, level=BASIC, preset=True,
       shown_when=("adapter_type", ("lokr",)), label="Factor"),
    _s("lokr_decompose_both", "bool", False, "Low-rank decompose both Kronecker factors.", "LoKR",
       _T, level=BASIC, preset=True, shown_when=("adapter_type", ("lokr",)),
       label="Decompose both"),
    _s("lokr_use_tucker", "bool", False, "Use Tucker decomposition.", "LoKR", _T, level=BASIC,
       preset=True, shown_when=("adapter_type", ("lokr",)), label="Tucker decomposition"),
    _s("lokr_use_scalar", "bool", False, "Learn an extra scalar per module.", "LoKR", _T,
       level=BASIC, preset=True, shown_when=("adapter_type", ("lokr",)), label="Scalar scaling"),
    _s("lokr_weight_decompose", "bool", False, "DoRA-style weight decomposition.", "LoKR", _T,
       level=BASIC, preset=True, shown_when=("adapter_type", ("lokr",)),
       label="DoRA weight decompose"),
    # --- LoHA (in preset files, beyond the spec's 38 fields: a LoHA preset
    # without its dims trained at the defaults; older readers ignore them) -------------------
    _s("loha_linear_dim", "int", 32, "LoHA linear dimension: each of its two low-rank pairs has "
       "this rank (the product reaches rank dim squared).", "LoHA", _T, minimum=1,
       maximum=10000, level=BASIC, preset=True, shown_when=("adapter_type", ("loha",)),
       label="Linear dimension"),
    _s("loha_linear_alpha", "int", 32, "LoHA linear alpha (scale = alpha / dim).", "LoHA", _T,
       minimum=1, maximum=20000, level=BASIC, preset=True,
       shown_when=("adapter_type", ("loha",)), label="Linear alpha"),
    # --- Checkpointing -------------------------------------------------------------------------
    _s("output_dir", "path", None, "Run folder: adapters, checkpoints, logs.", "Checkpointing", _T,
       required=True, level=BASIC, label="Output directory", metavar="DIR"),
    _s("save_every", "int", 10, "Save a full checkpoint every N epochs.", "Checkpointing", _T,
       minimum=1, maximum=100000, level=BASIC, preset=True, label="Save every N epochs"),
    _s("resume_from", "path", None, "A complete checkpoint-epoch-N or checkpoint-step-S folder "
       "to resume from.", "Checkpointing", _T, level=BASIC, label="Resume from", metavar="DIR"),
    # --- Logging -------------------------------------------------------------------------------
    _s("log_dir", "path", None, "TensorBoard folder (default: <output-dir>/runs).",
       "Logging / TensorBoard", _T, label="TensorBoard dir", metavar="DIR"),
    _s("log_every", "int", 10, "Log loss and LR every N optimizer steps.",
       "Logging / TensorBoard", _T, minimum=1, maximum=100000, level=BASIC, preset=True,
       label="Log every N steps"),
    _s("log_heavy_every", "int", 50, "Log per-layer gradient norms every N optimizer steps.",
       "Logging / TensorBoard", _T, minimum=1, maximum=100000, preset=True,
       label="Heavy log every N steps"),
    _s("sample_every_n_epochs", "int", 0, "Render an audio sample (samples/epoch-N.wav) every N "
       "epochs (0: off).", "Logging / TensorBoard", _T, minimum=0, maximum=100000, preset=True,
       label="Sample every N epochs"),
    # --- Validation, EMA, best adapter ---------------------------------------------------------
    _s("ema_decay", "float", 0.0, "Keep an EMA of the adapter weights with this decay per "
       "optimizer step (0: off; 0.99-0.9999 typical); final/ and best/ adapters come from it.",
       "Validation / EMA", _T, minimum=0.0, maximum=0.99999, preset=True, label="EMA decay"),
    _s("val_split", "float", 0.0, "Fraction of the tensor files held out (seeded) for a "
       "validation loss after each epoch (0: off).", "Validation / EMA", _T, minimum=0.0,
       maximum=0.5, preset=True, label="Validation split"),
    _s("save_best_after", "int", 1, "Write best/adapter only from this epoch on (by validation "
       "loss, else the 5-epoch mean training loss).", "Validation / EMA", _T, minimum=1,
       maximum=100000, preset=True, label="Save best after epoch"),
    _s("early_stop_patience", "int", 0, "End the run after N epochs without a better validation "
       "loss (or 5-epoch mean training loss without a split); 0: off.", "Validation / EMA", _T,
       minimum=0, maximum=100000, preset=True, label="Early-stop patience"),
    # --- Audio samples -------------------------------------------------------------------------
    _s("sample_prompt", "str", None, "Caption for the audio samples (empty: the first "
       "training song's own condition, no text encoder needed).", "Samples", _T,
       label="Sample prompt"),
    _s("sample_lyrics", "str", None, "Lyrics for the audio samples (empty: instrumental).",
       "Samples", _T, label="Sample lyrics"),
    _s("sample_duration", "float", 30.0, "Length of each audio sample in seconds.", "Samples",
       _T, minimum=1.0, maximum=600.0, label="Sample duration (s)"),
    _s("sample_steps", "int", 8, "Sampler steps (turbo 8, base/sft 50).", "Samples", _T,
       minimum=1, maximum=1000, variant_defaults={"turbo": 8, "base": 50},
       label="Sample steps"),
    _s("sample_seed", "int", 42, "Noise seed of the samples: the same seed and adapter give the "
       "same audio.", "Samples", _T, minimum=0, maximum=2**32 - 1, label="Sample seed"),
    _s("sample_cfg", "float", 7.0, "Classifier-free guidance scale for base/sft samples (turbo "
       "uses none).", "Samples", _T, minimum=1.0, maximum=30.0, label="Sample CFG scale"),
    # --- Runs that outlive the terminal --------------------------------------------------------
    _s("detach", "bool", False, "Start the run as its own process, apart from this terminal, "
       "print its folder and return (control it with `sidestep runs/stop/pause/attach`).",
       "Run control", _T, label="Keep running after I quit"),
    _s("notify_command", "str", None, "Command run when the run finishes, fails or needs "
       "attention (SIDESTEP_STATUS, SIDESTEP_RUN_DIR in its environment).", "Run control", _T,
       label="Notify command", metavar="CMD"),
    # --- Preprocessing -------------------------------------------------------------------------
    _s("preprocess", "bool", False, "Preprocess --audio-dir into --tensor-output before "
       "training.", "Preprocessing", _T, label="Preprocess first"),
    _s("audio_dir", "path", None, "Source audio folder; with --dataset-json, where its songs "
       "are looked up first (by relative path, else file name), for songs moved since it was "
       "written.", "Preprocessing", _T + ("preprocess",),
       label="Audio directory", metavar="DIR"),
    _s("dataset_json", "path", None, "Labelled dataset JSON (captions, lyrics, BPM, ...).",
       "Preprocessing", _T + ("preprocess",), label="Dataset JSON", metavar="FILE"),
    _s("tensor_output", "path", None, "Folder for the preprocessed .pt files (created if "
       "missing); training with --preprocess reads them from there. One dataset per folder: "
       "a folder holding other songs' .pt files is refused.", "Preprocessing", _T + ("preprocess",), label="Tensor output", metavar="DIR"),
    _s("max_duration", "float", 0.0, "Longest audio kept, in seconds (0: from the dataset).",
       "Preprocessing", _T + ("preprocess",), minimum=0.0, maximum=3600.0,
       label="Max duration (s)"),
    _s("normalize", "str", "none", "Audio normalization: none, peak (-1 dBFS) or lufs (-14 LUFS).",
       "Preprocessing", _T + ("preprocess",), choices=("none", "peak", "lufs"),
       label="Normalize"),
    # --- Corrected training --------------------------------------------------------------------
    _s("cfg_ratio", "float", 0.15, "CFG dropout: probability of replacing a sample's condition "
       "with the null embedding. Off for turbo unless set explicitly.", "Corrected Training",
       _FIXED_SELECTIVE, minimum=0.0, maximum=1.0, level=BASIC, preset=True,
       variant_defaults={"turbo": 0.0, "base": 0.15}, label="CFG dropout ratio"),
    _s("loss_weighting", "str", "none", "none (flat MSE) or min_snr.", "Loss weighting", _T,
       choices=("none", "min_snr"), preset=True, label="Loss weighting"),
    _s("snr_gamma", "float", 5.0, "Gamma for min-SNR weighting.", "Loss weighting", _T,
       minimum=0.0, exclusive_minimum=True, maximum=1000.0, preset=True, label="SNR gamma",
       shown_when=("loss_weighting", ("min_snr",))),
    # --- Selective / estimate ------------------------------------------------------------------
    _s("module_config", "path", None, "Module config JSON written by `estimate`.", "Selective",
       _SEL, label="Module config", metavar="FILE"),
    _s("auto_estimate", "bool", False, "Run the estimate before training and use its modules.",
       "Selective", _SEL, label="Auto estimate"),
    _s("estimate_batches", "int", None, "Batches for the estimate (empty: automatic, 8 on a CPU); "
       "on a GPU 8-32, by its free memory.", "Estimation", _SEL_EST, minimum=1, maximum=100000,
       label="Estimate batches"),
    _s("top_k", "int", 16, "Number of top modules to select.", "Estimation", _SEL_EST, minimum=1,
       maximum=10000, label="Top K"),
    _s("granularity", "str", "module", "Rank whole layers or single modules.", "Estimation",
       _SEL_EST, choices=("layer", "module"), label="Granularity"),
    _s("output", "path", None, "JSON file (*.json) to write, in a folder that exists; an "
       "existing file is replaced only with --force. Default: estimate writes "
       "./estimate-<variant>-<granularity>.json (a new name if that exists), build-dataset "
       "INPUT/dataset.json.", "Output", ("estimate", "build-dataset"),
       label="Output file", metavar="FILE",
       command_help={"estimate": "JSON file (*.json) for the module ranking, in a folder that "
                                 "exists; an existing file is replaced only with --force. "
                                 "Default: ./estimate-<variant>-<granularity>.json (a new name "
                                 "if that exists).",
                     "build-dataset": "The dataset.json to write (*.json), in a folder that "
                                      "exists; an existing file is replaced only with --force. "
                                      "Default: INPUT/dataset.json."}),
    _s("force", "bool", False, "Replace the output file when it exists (else the command "
       "stops and the file is kept).", "Output", ("estimate", "build-dataset"),
       label="Replace an existing file"),
    # --- compare-configs -----------------------------------------------------------------------
    _s("configs", "path_list", None, "Module config JSON files to compare (at least two).",
       "Compare", ("compare-configs",), required=True, label="Configs", metavar="FILE"),
    # --- build-dataset -------------------------------------------------------------------------
    _s("input", "path", None, "Root folder of audio files (scanned recursively).",
       "Build dataset", ("build-dataset",), flags=("-i", "--input"), required=True,
       label="Input directory", metavar="DIR"),
    _s("tag", "str", "", "Trigger tag applied to every sample.", "Build dataset",
       ("build-dataset",), label="Trigger tag"),
    _s("tag_position", "str", "prepend", "Where the tag goes in the caption.", "Build dataset",
       ("build-dataset",), choices=("prepend", "append", "replace"), label="Tag position"),
    _s("genre_ratio", "int", 0, "Percent of samples that use the genre instead of the caption.",
       "Build dataset", ("build-dataset",), minimum=0, maximum=100, label="Genre ratio (%)"),
    _s("name", "str", "local_dataset", "Dataset name in the metadata block.", "Build dataset",
       ("build-dataset",), label="Dataset name"),
)

BY_NAME: dict[str, Setting] = {s.name: s for s in SETTINGS}
if len(BY_NAME) != len(SETTINGS):  # pragma: no cover - guards edits to the table
    raise RuntimeError("duplicate setting names in SETTINGS")

# The preset file's fields, in the order they are written (spec 000, plus the validation and EMA
# fields: a reader of the spec format ignores unknown keys).
PRESET_FIELDS: tuple[Setting, ...] = tuple(s for s in SETTINGS if s.preset)
BY_PRESET_KEY: dict[str, Setting] = {s.file_key: s for s in PRESET_FIELDS}


def settings_for(command: str) -> tuple[Setting, ...]:
    """Settings a subcommand takes, in table order."""
    if command not in COMMANDS:
        raise KeyError(f"unknown command {command!r}")
    return tuple(s for s in SETTINGS if command in s.commands)


def training_settings() -> tuple[Setting, ...]:
    """Every setting any training mode takes: the fields of ``TrainingConfig``."""
    return tuple(s for s in SETTINGS if set(s.commands) & set(TRAIN_MODES))


@dataclass(frozen=True)
class FieldProblem:
    """A problem with one setting: ``field`` is the schema name (or "" for the whole config)."""

    field: str
    message: str

    def __str__(self) -> str:
        if not self.field:
            return self.message
        flag = BY_NAME[self.field].flags[-1] if self.field in BY_NAME else self.field
        return f"{flag}: {self.message}"


@dataclass
class Problems:
    errors: list[FieldProblem] = field(default_factory=list)
    warnings: list[FieldProblem] = field(default_factory=list)

    def error(self, name: str, message: str) -> None:
        self.errors.append(FieldProblem(name, message))

    def warn(self, name: str, message: str) -> None:
        self.warnings.append(FieldProblem(name, message))
