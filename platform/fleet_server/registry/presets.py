"""Compression presets an operator picks from, and the step counts a job may override.

A preset names a recipe (codebook, ADMM or projection, pruning, data or data-free); the job's config
holds the numbers (steps, frames) so a test or a quick trial runs the same recipe in seconds.
"""

from dataclasses import dataclass

from model_store.ir import Codebook


@dataclass(frozen=True)
class Preset:
    key: str
    label: str
    description: str
    codebook: Codebook
    trains: bool  # ADMM (and pruning) on rendered smart-park scenes; else projection only
    pruned: bool
    data_free: bool
    # Mixed precision by width: layers narrower than AdmmQuantConfig.wide_channels take this codebook.
    narrow_codebook: Codebook | None = None
    # Mixed precision by sensitivity: the layers whose projection alone raises the loss most take this
    # codebook, within AdmmQuantConfig.sensitive_fraction of the weights (compression.sensitivity).
    sensitive_codebook: Codebook | None = None

    @property
    def codebook_label(self) -> str:
        """The package's codebook as the console and the API show it: "ternary+pow2-4" when mixed."""
        other = self.narrow_codebook or self.sensitive_codebook
        return str(self.codebook) if other is None else f"{self.codebook}+{other}"


PRESETS: dict[str, Preset] = {
    preset.key: preset
    for preset in (
        Preset(
            "int8",
            "int8",
            "int8 codes, projection only, activation ranges from rendered frames: the safe first package.",
            Codebook.INT8,
            trains=False,
            pruned=False,
            data_free=False,
        ),
        Preset(
            "3-bit",
            "3-bit",
            "ADMM onto {0, +-1, +-2, +-4} (first and last layers int8) on rendered scenes, then fine-tuning.",
            Codebook.POW2_4,
            trains=True,
            pruned=False,
            data_free=False,
        ),
        Preset(
            "ternary-mixed",
            "ternary + 3-bit narrow",
            "ADMM onto ternary {0, +-1} in layers of 128 or more output channels and {0, +-1, +-2, +-4} in "
            "narrower ones (first and last int8): 16x instead of 3-bit's 11x on the smart-park detector, at "
            "3-bit's accuracy.",
            Codebook.TERNARY,
            trains=True,
            pruned=False,
            data_free=False,
            narrow_codebook=Codebook.POW2_4,
        ),
        Preset(
            "ternary-sensitive",
            "ternary + 3-bit where it matters",
            "ADMM onto ternary {0, +-1}, except the layers whose projection alone raises the loss most, which "
            "take {0, +-1, +-2, +-4} within 5 % of the weights (measured before training; first and last "
            "int8): 18x on the smart-park detector, nearly ternary's size at about half its loss.",
            Codebook.TERNARY,
            trains=True,
            pruned=False,
            data_free=False,
            sensitive_codebook=Codebook.POW2_4,
        ),
        Preset(
            "3-bit-sparse",
            "3-bit + 90 % sparse",
            "Progressive pruning to 90 % zeros, then ADMM onto {0, +-1, +-2, +-4}: the smallest package.",
            Codebook.POW2_4,
            trains=True,
            pruned=True,
            data_free=False,
        ),
        Preset(
            "data-free",
            "data-free",
            "Projection onto {0, +-1, +-2, +-4}, activation ranges from the batch-norm statistics: no data at all.",
            Codebook.POW2_4,
            trains=False,
            pruned=False,
            data_free=True,
        ),
    )
}
PRESET_CHOICES = [(preset.key, preset.label) for preset in PRESETS.values()]


@dataclass(frozen=True)
class Setting:
    default: int | float
    low: int | float
    high: int | float
    applies: str  # "all", "training", "pruning", "data" (not data-free)
    help: str


SETTINGS: dict[str, Setting] = {
    "admm_steps": Setting(300, 1, 20_000, "training", "ADMM steps"),
    "finetune_steps": Setting(100, 0, 5_000, "training", "fine-tuning steps after ADMM"),
    "finetune_codes": Setting(
        1, 0, 1, "training", "1: fine-tuning moves the codes too (straight-through); 0: float parts only"
    ),
    "distillation_weight": Setting(
        1.0, 0.0, 100.0, "training", "weight of matching the float model's outputs (0: off)"
    ),
    "pruning_steps": Setting(8, 1, 100, "pruning", "steps of the cubic sparsity schedule"),
    "finetune_steps_per_pruning_step": Setting(25, 0, 1_000, "pruning", "training steps after each pruning step"),
    "target_sparsity": Setting(0.9, 0.05, 0.98, "pruning", "fraction of zero weights"),
    "pruning_learning_rate": Setting(1e-3, 1e-6, 1e-1, "pruning", "Adam learning rate between pruning steps"),
    "batch_size": Setting(8, 1, 64, "training", "rendered frames per training batch"),
    "learning_rate": Setting(5e-4, 1e-6, 1e-1, "training", "ADMM's Adam learning rate"),
    "calibration_frames": Setting(32, 1, 512, "data", "rendered frames for the activation ranges"),
    "eval_frames_per_condition": Setting(8, 0, 200, "all", "held-out frames per condition for mAP (0: none)"),
    "selftest_frames": Setting(4, 1, 32, "all", "frames in the package's self-test set"),
}


class PresetError(ValueError):
    """An unknown preset or a setting it does not take; the message lists what it does take."""


def applicable_settings(preset: Preset) -> list[str]:
    def applies(setting: Setting) -> bool:
        return (
            setting.applies == "all"
            or (setting.applies == "training" and preset.trains)
            or (setting.applies == "pruning" and preset.pruned)
            or (setting.applies == "data" and not preset.data_free)
        )

    return [name for name, setting in SETTINGS.items() if applies(setting)]


def get_preset(key: str) -> Preset:
    try:
        return PRESETS[key]
    except KeyError:
        raise PresetError(f"unknown preset {key!r}; choose one of {', '.join(PRESETS)}") from None


def resolve_config(key: str, overrides: dict | None = None) -> dict:
    """The preset's full settings with `overrides` applied, each checked against its type and range."""
    preset = get_preset(key)
    names = applicable_settings(preset)
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(names))
    if unknown:
        raise PresetError(f"preset {key!r} does not take {', '.join(unknown)}; it takes {', '.join(names)}")
    config = {}
    for name in names:
        setting = SETTINGS[name]
        value = overrides.get(name, setting.default)
        integer = isinstance(setting.default, int)
        if isinstance(value, bool) or not isinstance(value, int | float) or (integer and value != int(value)):
            kind = "an integer" if integer else "a number"
            raise PresetError(f"{name} must be {kind}, got {value!r}")
        value = int(value) if integer else float(value)
        if not setting.low <= value <= setting.high:
            raise PresetError(f"{name} must be between {setting.low} and {setting.high}, got {value}")
        config[name] = value
    return config


def training_steps(preset: Preset, config: dict) -> int:
    """Training steps a job of this preset runs (each one reports a loss)."""
    if not preset.trains:
        return 0
    steps = config["admm_steps"] + config["finetune_steps"]
    if preset.pruned:
        steps += config["pruning_steps"] * config["finetune_steps_per_pruning_step"]
    return steps


def scaled_steps(key: str, steps: int) -> dict:
    """Overrides that make a training preset run about `steps` training steps (the CLI's --steps)."""
    preset = get_preset(key)
    if not preset.trains:
        raise PresetError(f"preset {key!r} trains nothing: it has no steps to set")
    if steps < 1:
        raise PresetError(f"steps must be at least 1, got {steps}")
    overrides = {"admm_steps": steps, "finetune_steps": steps // 3}
    if preset.pruned:
        pruning_steps = min(SETTINGS["pruning_steps"].default, steps)
        overrides |= {"pruning_steps": pruning_steps, "finetune_steps_per_pruning_step": steps // pruning_steps}
    return overrides
