"""Physics of the synthetic machines: one function per machine type.

Every function has the signature ``(rng, n, sr, attrs, anomaly) -> (normal, fault)``: two float64
arrays of ``n`` samples at ``sr`` Hz. ``normal`` is the healthy machine; ``fault`` is the extra
sound of the fault named by ``anomaly`` (zeros when ``anomaly`` is None). The dataset builder
mixes the fault in at an energy ratio set by the difficulty, adds background noise and microphone
coloration, and normalises the level, so a fault never makes a clip louder.

Frequencies are in Hz, times in seconds. Attribute values arrive as strings from file names.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

Rng = np.random.Generator
Physics = Callable[[Rng, int, int, dict[str, str], str | None], tuple[np.ndarray, np.ndarray]]


# --------------------------------------------------------------------------- building blocks


def harmonics(rng: Rng, n: int, sr: int, f0: float, amps: np.ndarray, jitter: float = 0.002):
    """Sum of harmonics k*f0 (k = 1..len(amps)) with random phases and slow speed wander."""
    # Speed wanders by a fraction `jitter`: the phase integrates a slowly varying frequency.
    wander = 1.0 + jitter * smooth_noise(rng, n, sr, cutoff=0.5)
    phase = 2 * np.pi * f0 * np.cumsum(wander) / sr
    out = np.zeros(n)
    for k, a in enumerate(amps, start=1):
        if k * f0 < sr / 2 and a > 0:
            out += a * np.sin(k * phase + rng.uniform(0, 2 * np.pi))
    return out


def smooth_noise(rng: Rng, n: int, sr: int, cutoff: float) -> np.ndarray:
    """Zero-mean noise band-limited below ``cutoff`` Hz, unit standard deviation."""
    spec = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1 / sr)
    spec[freqs > cutoff] = 0
    x = np.fft.irfft(spec, n)
    return x / (x.std() + 1e-12)


def shaped_noise(rng: Rng, n: int, sr: int, gain: Callable[[np.ndarray], np.ndarray]):
    """White noise shaped by ``gain(freqs)`` (amplitude), unit standard deviation."""
    spec = np.fft.rfft(rng.standard_normal(n))
    spec *= gain(np.fft.rfftfreq(n, 1 / sr))
    x = np.fft.irfft(spec, n)
    return x / (x.std() + 1e-12)


def colored_noise(rng: Rng, n: int, sr: int, exponent: float) -> np.ndarray:
    """1/f^exponent power spectrum: 0 white, 1 pink, 2 brown."""
    return shaped_noise(rng, n, sr, lambda f: 1.0 / np.maximum(f, 20.0) ** (exponent / 2))


def band_noise(rng: Rng, n: int, sr: int, center: float, width: float) -> np.ndarray:
    """Noise with a Gaussian band around ``center`` Hz of standard deviation ``width`` Hz."""
    return shaped_noise(rng, n, sr, lambda f: np.exp(-0.5 * ((f - center) / width) ** 2))


def resonate(impulses: np.ndarray, sr: int, freq: float, decay: float) -> np.ndarray:
    """Excite a damped structural mode (``freq`` Hz, amplitude decay time ``decay`` s)."""
    from scipy.signal import fftconvolve

    t = np.arange(int(sr * decay * 6)) / sr
    h = np.exp(-t / decay) * np.sin(2 * np.pi * min(freq, 0.45 * sr) * t)
    return fftconvolve(impulses, h)[: impulses.size]


def impulse_train(
    rng: Rng, n: int, sr: int, rate: float, jitter: float = 0.01, amps: np.ndarray | None = None
):
    """Unit impulses at ``rate`` Hz with timing jitter (fraction of the period)."""
    x = np.zeros(n)
    period = sr / rate
    times = np.arange(rng.uniform(0, period), n, period)
    times = times + rng.normal(0, jitter * period, times.size)
    idx = np.clip(times.astype(int), 0, n - 1)
    x[idx] = 1.0 if amps is None else amps(idx)
    return x


def envelope(mask_times: list[tuple[float, float]], n: int, sr: int, ramp: float = 0.01):
    """0/1 envelope on during the given (start, stop) intervals, with short linear ramps."""
    env = np.zeros(n)
    for start, stop in mask_times:
        a, b = int(start * sr), int(stop * sr)
        env[max(a, 0) : max(min(b, n), 0)] = 1.0
    k = max(int(ramp * sr), 1)
    return np.convolve(env, np.ones(k) / k, mode="same")


# --------------------------------------------------------------------------- machines


def bearing(rng: Rng, n: int, sr: int, attrs: dict[str, str], anomaly: str | None):
    """Rolling-element bearing on a shaft turning at ``vel`` rpm.

    Normal: shaft harmonics and broadband rolling noise through the housing resonance.
    Faults: outer race (impulses at BPFO, steady) or inner race (impulses at BPFI, amplitude
    modulated once per revolution as the defect turns in and out of the load zone), each
    exciting a structural resonance around 2.5-4 kHz.
    """
    fr = float(attrs["vel"]) / 60.0
    amps = np.array([1.0, 0.5, 0.3, 0.2, 0.12, 0.08]) * rng.uniform(0.8, 1.2, 6)
    rolling = band_noise(rng, n, sr, center=1200 + 30 * fr, width=800)
    normal = 0.3 * harmonics(rng, n, sr, fr, amps) + rolling
    fault = np.zeros(n)
    if anomaly:
        # 9 balls, ball/pitch diameter ratio 0.25, contact angle 0: textbook defect frequencies.
        n_balls, ratio = 9, 0.25
        if anomaly == "outer_race":
            rate = n_balls / 2 * fr * (1 - ratio)
            impulses = impulse_train(rng, n, sr, rate)
        else:  # inner_race: modulated by shaft rotation
            rate = n_balls / 2 * fr * (1 + ratio)
            t = np.arange(n) / sr
            load = 0.5 * (1 + np.cos(2 * np.pi * fr * t + rng.uniform(0, 2 * np.pi)))
            impulses = impulse_train(rng, n, sr, rate) * load
        fault = resonate(impulses, sr, rng.uniform(2500, 4000), decay=0.0015)
    return normal, fault


def gearbox(rng: Rng, n: int, sr: int, attrs: dict[str, str], anomaly: str | None):
    """Single-stage gearbox: motor at ``volt`` volts sets the speed, ``wt`` grams the load.

    Normal: gear-mesh frequency (23 teeth) and its harmonics with shaft-rate sidebands; more
    load, stronger mesh and more noise. Faults: a broken tooth (one impact per revolution
    ringing the casing) or wear (stronger, irregular sidebands).
    """
    fr = 0.8 * float(attrs["volt"])  # DC motor: shaft speed (Hz) proportional to voltage
    load = float(attrs["wt"]) / 100.0
    mesh = 23 * fr
    t = np.arange(n) / sr
    am = 1 + 0.15 * np.sin(2 * np.pi * fr * t + rng.uniform(0, 2 * np.pi))
    tone = harmonics(rng, n, sr, mesh, np.array([1.0, 0.4, 0.2]) * (0.6 + 0.2 * load))
    normal = (
        am * tone
        + 0.3 * colored_noise(rng, n, sr, 1.0)
        + 0.1 * harmonics(rng, n, sr, fr, np.array([1.0, 0.5]))
    )
    fault = np.zeros(n)
    if anomaly == "broken_tooth":
        fault = resonate(impulse_train(rng, n, sr, fr, jitter=0.003), sr, 1800, decay=0.004)
    elif anomaly == "wear":
        mod = smooth_noise(rng, n, sr, cutoff=3 * fr)
        fault = mod * harmonics(rng, n, sr, mesh, np.array([1.0, 0.6, 0.4]))
    return normal, fault


def fan(rng: Rng, n: int, sr: int, attrs: dict[str, str], anomaly: str | None):
    """Axial fan with 7 blades at ``spd`` rps; ``mode`` sets the air-flow noise colour.

    Normal: blade-pass harmonics over broadband turbulence. Faults: imbalance (once-per-turn
    force: rotation-rate tones, blade-pass sidebands and the rotor rubbing its guard) or a
    damaged blade (one blade differs, so rotation harmonics that are not multiples of 7 appear,
    with a rattle).
    """
    fr = float(attrs["spd"])
    bpf = 7 * fr
    turbulence = colored_noise(rng, n, sr, 0.6 + 0.3 * float(attrs["mode"]))
    blades = harmonics(rng, n, sr, bpf, np.array([1.0, 0.5, 0.25, 0.12]))
    normal = blades + 0.8 * turbulence
    fault = np.zeros(n)
    if anomaly == "imbalance":
        # Once-per-turn force: 1x and 2x tones, and blade-pass sidebands at k*bpf +- fr.
        amps = np.zeros(22)
        amps[[0, 1]] = (1.0, 0.5)
        amps[[5, 7, 12, 14, 19, 21]] = (0.9, 0.9, 0.5, 0.5, 0.25, 0.25)
        t = np.arange(n) / sr
        rub = (1 + np.cos(2 * np.pi * fr * t)) * band_noise(rng, n, sr, 2500, 500)
        fault = harmonics(rng, n, sr, fr, amps) + 0.7 * rub  # the wobbling rotor rubs its guard
    elif anomaly == "blade_damage":
        odd = np.array([0.8 if k % 7 else 0.0 for k in range(1, 30)])
        fault = harmonics(rng, n, sr, fr, odd) + band_noise(rng, n, sr, 8 * bpf, 150)
    return normal, fault


# Open/close schedules of the valve patterns: (open time, close time) within a cycle, seconds.
VALVE_PATTERNS = {
    "00": [(0.10, 0.40)],
    "01": [(0.05, 0.20), (0.50, 0.70)],
    "02": [(0.10, 0.25), (0.35, 0.50), (0.60, 0.75)],
    "03": [(0.20, 0.80)],
}


def valve(rng: Rng, n: int, sr: int, attrs: dict[str, str], anomaly: str | None):
    """Solenoid valve following an open/close pattern ``pat`` on a cycle of ``cyc`` seconds.

    Normal: a click at each opening and closing (a short burst ringing the valve body) and flow
    hiss while open. Faults: timing (events late or missing, so the pattern breaks) or a leak
    (hiss while the valve should be closed).
    """
    cycle = float(attrs["cyc"]) / 10.0
    pattern = VALVE_PATTERNS[attrs["pat"]]
    duration = n / sr
    events = []
    for c0 in np.arange(0, duration, cycle):
        for a, b in pattern:
            events.append((c0 + a * cycle, c0 + b * cycle))
    clicks = np.zeros(n)
    for a, b in events:
        for when in (a, b):
            i = int(when * sr)
            if 0 <= i < n:
                clicks[i] = rng.uniform(0.8, 1.2)
    body = rng.uniform(1800, 2200)
    flow_env = envelope(events, n, sr)
    hiss = band_noise(rng, n, sr, 4000, 1500)
    normal = 3.0 * resonate(clicks, sr, body, 0.003) + 0.6 * flow_env * hiss
    normal += 0.05 * colored_noise(rng, n, sr, 1.0)
    fault = np.zeros(n)
    if anomaly == "timing":
        # A shifted schedule: the sound of the faulty pattern minus the healthy one.
        shifted = [(a + 0.15 * cycle, b + 0.1 * cycle) for a, b in events if rng.random() < 0.7]
        late = np.zeros(n)
        for a, b in shifted:
            for when in (a, b):
                i = int(when * sr)
                if 0 <= i < n:
                    late[i] = 1.0
        fault = (
            3.0 * resonate(late - clicks, sr, body, 0.003)
            + 0.6 * (envelope(shifted, n, sr) - flow_env) * hiss
        )
    elif anomaly == "leak":
        fault = (1.0 - flow_env) * band_noise(rng, n, sr, 6000, 1200)
    return normal, fault


def slider(rng: Rng, n: int, sr: int, attrs: dict[str, str], anomaly: str | None):
    """Linear slide moving back and forth at ``vel`` cm/s over a 20-cm stroke.

    Normal: motor whine while moving, sliding friction (noise with a stick-slip flutter) and
    a soft knock at each end of the stroke. Faults: rail damage (a click each time the carriage
    passes the damaged spot) or no grease (stronger, rougher friction).
    """
    speed = float(attrs["vel"])
    stroke = 20.0 / speed  # seconds per one-way stroke
    t = np.arange(n) / sr
    phase = (t / stroke + rng.uniform(0, 1)) % 2.0  # 0..1 forward, 1..2 back
    position = np.where(phase < 1, phase, 2 - phase)
    moving = np.clip(np.minimum(position, 1 - position) * 20, 0, 1)
    flutter = 1 + 0.3 * np.sin(2 * np.pi * (40 + 2 * speed) * t)
    friction = moving * flutter * band_noise(rng, n, sr, 900 + 20 * speed, 400)
    whine = moving * harmonics(rng, n, sr, 120 + 6 * speed, np.array([1.0, 0.4, 0.2]))
    ends = np.zeros(n)
    turn = np.flatnonzero(np.diff(np.floor(phase)) != 0)
    ends[turn] = 1.0
    normal = friction + 0.5 * whine + 2.0 * resonate(ends, sr, 300, 0.01)
    fault = np.zeros(n)
    if anomaly == "rail_damage":
        spot = rng.uniform(0.3, 0.7)
        crossings = np.flatnonzero(np.diff(np.sign(position - spot)) != 0)
        clicks = np.zeros(n)
        clicks[crossings] = 1.0
        fault = resonate(clicks, sr, rng.uniform(3000, 5000), 0.002)
    elif anomaly == "no_grease":
        rough = moving * band_noise(rng, n, sr, 2500, 900) * (1 + smooth_noise(rng, n, sr, 30))
        fault = rough
    return normal, fault


@dataclass(frozen=True)
class MachineType:
    """A machine's physics, its attribute values per domain and its fault kinds."""

    physics: Physics
    source: dict[str, tuple[str, ...]]
    target: dict[str, tuple[str, ...]]
    faults: tuple[str, ...]


MACHINE_TYPES: dict[str, MachineType] = {
    "bearing": MachineType(
        bearing,
        {"vel": ("600", "900", "1200")},
        {"vel": ("1500", "1800")},
        ("outer_race", "inner_race"),
    ),
    "fan": MachineType(
        fan,
        {"spd": ("20", "25"), "mode": ("0",)},
        {"spd": ("30", "35"), "mode": ("1",)},
        ("imbalance", "blade_damage"),
    ),
    "gearbox": MachineType(
        gearbox,
        {"volt": ("10", "12"), "wt": ("100", "150")},
        {"volt": ("14",), "wt": ("250",)},
        ("broken_tooth", "wear"),
    ),
    "valve": MachineType(
        valve,
        {"pat": ("00", "01"), "cyc": ("10",)},
        {"pat": ("02", "03"), "cyc": ("8",)},
        ("timing", "leak"),
    ),
    "slider": MachineType(
        slider,
        {"vel": ("100", "200")},
        {"vel": ("300", "400")},
        ("rail_damage", "no_grease"),
    ),
}
