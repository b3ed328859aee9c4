"""Physically motivated machine sounds: one generator per machine type, plus the room around it.

Every generator has the signature ``generate(rng, seconds, sample_rate, attrs, anomaly,
ratio_db) -> np.ndarray``: float64, mono, shape ``(round(seconds * sample_rate),)``, arbitrary
scale (the caller adds the background and sets the level). ``attrs`` holds the clip's attribute
values as strings (as in the file name), ``anomaly`` is ``None`` for a healthy machine or one of
the type's fault names, and ``ratio_db`` is the fault's strength: the energy of what the fault
changes, relative to the healthy machine's sound, in dB. Additive faults are scaled to exactly that
ratio; faults that reshape the healthy sound (modulation, timing) map it to a physical severity.

The machines, briefly:

* **bearing** (``vel`` shaft speed in rpm, ``loc`` microphone position): shaft harmonics from
  residual imbalance, rolling noise modulated at the cage rate, and housing modes (2.2-4.6 kHz)
  that the rolling noise and stray debris impacts excite. Faults: an outer- or inner-race spall,
  i.e. impulse trains at BPFO or BPFI (from the ball geometry) ringing those modes; the inner
  race passes through the load zone once per revolution, so its impacts are amplitude-modulated
  at the shaft rate.
* **gearbox** (``volt`` motor voltage -> speed, ``wt`` load in g): the mesh frequency (teeth x
  shaft rate) with harmonics and weak run-out sidebands at the shaft rate, DC-motor brush noise.
  Faults: a broken tooth (once per revolution the mesh drops out and the next tooth hits), wear
  (strong sidebands at 1x-3x the shaft rate).
* **fan** (``spd`` rpm, ``mode`` duct throttling 1-3): blade-pass pressure pulses (7 blades) and
  turbulence modulated at the blade-pass rate. Faults: imbalance (1x amplitude modulation and
  housing vibration), blade damage (one blade differs, so all shaft harmonics appear, not only
  multiples of the blade count).
* **valve** (``pat`` open/close schedule, ``flow`` rate): plunger clicks on opening and closing,
  flow hiss and solenoid buzz while open. Faults: timing (stuck closed, stuck open, late opening),
  a leak (hiss and whistle while closed), chatter (the plunger bounces on closing).
* **slider** (``vel`` mean speed in mm/s, ``stroke`` in mm): a carriage moving back and forth
  (sinusoidal position): sliding friction noise growing with speed, ball-screw tones whose pitch
  follows the speed, stick-slip squeal near the reversals. Faults: rail damage (a click where the
  carriage passes one position, twice per stroke), dry rail (brighter friction, squeal at higher
  speeds).

The room (:func:`background`, :func:`microphone`) differs per domain: pink noise and 50-Hz hum
in the source domain, brown noise, 60-Hz hum and a lower signal-to-noise ratio in the target
domain; every clip gets its own gentle microphone coloration.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import signal

TAU = 2.0 * np.pi

Generator = Callable[
    [np.random.Generator, float, int, Mapping[str, str], str | None, float], np.ndarray
]


# ----------------------------------------------------------------------------- signal helpers


def n_samples(seconds: float, sample_rate: int) -> int:
    """Clip length in samples (at least 1)."""
    return max(1, int(round(seconds * sample_rate)))


def rms(x: np.ndarray) -> float:
    """Root mean square of ``x`` (0 for an empty array)."""
    return float(np.sqrt(np.mean(np.square(x)))) if x.size else 0.0


def _unit(x: np.ndarray) -> np.ndarray:
    r = rms(x)
    return x / r if r > 0 else x


def shaped_noise(
    rng: np.random.Generator, n: int, sample_rate: int, gain: Callable[[np.ndarray], np.ndarray]
) -> np.ndarray:
    """Gaussian noise with amplitude response ``gain(f)`` (f in Hz) -> (n,), unit RMS.

    Drawn directly in the frequency domain, which saves one FFT over filtering white noise.
    """
    f = np.fft.rfftfreq(n, 1.0 / sample_rate)
    spec = (rng.standard_normal(f.size) + 1j * rng.standard_normal(f.size)) * gain(f)
    spec[0] = 0.0
    return _unit(np.fft.irfft(spec, n))


def band(lo: float, hi: float, order: int = 2) -> Callable[[np.ndarray], np.ndarray]:
    """Butterworth-like band-pass magnitude between ``lo`` and ``hi`` Hz."""

    def gain(f: np.ndarray) -> np.ndarray:
        f = np.maximum(f, 1e-3)
        return 1.0 / np.sqrt((1.0 + (lo / f) ** (2 * order)) * (1.0 + (f / hi) ** (2 * order)))

    return gain


def power_law(exponent: float, f_min: float = 10.0) -> Callable[[np.ndarray], np.ndarray]:
    """Amplitude ``f**(-exponent / 2)`` (power ``1/f**exponent``): 1 = pink, 2 = brown."""
    return lambda f: np.maximum(f, f_min) ** (-exponent / 2.0)


def equalize(
    x: np.ndarray, sample_rate: int, gain_db: Callable[[np.ndarray], np.ndarray]
) -> np.ndarray:
    """Apply a zero-phase gain curve ``gain_db(f)`` (dB, f in Hz) to ``x`` (n,) via the FFT."""
    f = np.fft.rfftfreq(x.size, 1.0 / sample_rate)
    return np.asarray(np.fft.irfft(np.fft.rfft(x) * 10.0 ** (gain_db(f) / 20.0), x.size))


def wander(
    rng: np.random.Generator, n: int, sample_rate: int, depth: float, rate: float
) -> np.ndarray:
    """Slow random fluctuation ``1 + depth * g(t)`` (n,), g smooth with ~unit spread.

    Real machines never hold their speed exactly; ``rate`` (Hz) is how fast it drifts.
    """
    knots = int(n / sample_rate * rate) + 2
    t = np.linspace(0.0, knots - 1.0, n)
    return 1.0 + depth * np.interp(t, np.arange(knots), rng.standard_normal(knots))


def rotation(rng: np.random.Generator, freq: np.ndarray, sample_rate: int) -> np.ndarray:
    """Shaft angle in radians (n,) from the instantaneous rotation rate ``freq`` (n,) in Hz."""
    return TAU * np.cumsum(freq) / sample_rate + rng.uniform(0.0, TAU)


def wrap(angle: np.ndarray) -> np.ndarray:
    """Angle wrapped to [-pi, pi)."""
    return np.mod(angle + np.pi, TAU) - np.pi


def crossings(cycles: np.ndarray) -> np.ndarray:
    """Sample indices where a running cycle count (n,) passes an integer: one event per cycle."""
    whole = np.floor(cycles)
    return np.flatnonzero(whole[1:] != whole[:-1]) + 1


def impulses(n: int, index: np.ndarray, amplitude: np.ndarray | float = 1.0) -> np.ndarray:
    """(n,) zeros with ``amplitude`` added at the sample ``index`` values inside the clip."""
    index = np.asarray(index, dtype=np.int64)
    amp = np.broadcast_to(np.asarray(amplitude, dtype=float), index.shape)
    keep = (index >= 0) & (index < n)
    x = np.zeros(n)
    np.add.at(x, index[keep], amp[keep])
    return x


def resonate(x: np.ndarray, sample_rate: int, freq: float, bandwidth: float) -> np.ndarray:
    """Drive a two-pole band-pass resonance at ``freq`` Hz (-3 dB ``bandwidth`` Hz) with ``x``.

    An impulse in gives a decaying sinusoid with time constant ``1 / (pi * bandwidth)``: how a
    struck housing, plunger or rail rings. Zeros at DC and Nyquist keep a ringing mode from
    leaking low-frequency thuds. The gain is set so that the impulse response has unit energy
    (sum of squares), whatever the frequency and damping. ``freq`` is kept below Nyquist.
    ``x``: (n,) -> (n,).
    """
    freq = min(freq, 0.45 * sample_rate)
    r = np.exp(-np.pi * bandwidth / sample_rate)
    b, a = [1.0, 0.0, -1.0], [1.0, -2.0 * r * np.cos(TAU * freq / sample_rate), r * r]
    # Unit-energy gain from the impulse response, truncated after ~14 time constants.
    probe = np.zeros(int(14.0 / (1.0 - r)) + 3)
    probe[0] = 1.0
    gain = 1.0 / np.sqrt(np.sum(signal.lfilter(b, a, probe) ** 2))
    return np.asarray(signal.lfilter(np.multiply(b, gain), a, x))


def strikes(
    n: int,
    sample_rate: int,
    index: np.ndarray,
    amplitude: np.ndarray | float,
    freq: float,
    bandwidth: float,
) -> np.ndarray:
    """Ring a resonance (``freq``, ``bandwidth`` Hz) with strikes at sample ``index`` -> (n,).

    Scaled so that strikes of amplitude ``a`` at ``rate`` per second have an RMS of
    ``sqrt(rate * mean(a**2))`` at any sample rate: impacts and steady sounds keep their balance.
    """
    hits = impulses(n, index, amplitude) * np.sqrt(sample_rate)
    return resonate(hits, sample_rate, freq, bandwidth)


def harmonics(
    rng: np.random.Generator, phase: np.ndarray, amps: Sequence[float] | np.ndarray
) -> np.ndarray:
    """``sum_k amps[k-1] * cos(k * phase + random)``, k = 1..len(amps), for a phase (n,).

    The k-th harmonic comes from the (k-1)-th by one complex multiplication, which is several
    times cheaper than evaluating a cosine per harmonic.
    """
    base = np.empty(phase.size, dtype=complex)
    base.real, base.imag = np.cos(phase), np.sin(phase)  # faster than np.exp(1j * phase)
    power = base.copy()
    out = np.zeros(phase.size)
    for k, a in enumerate(amps, start=1):
        if k > 1:
            power *= base
        offset = rng.uniform(0.0, TAU)
        out += a * (np.cos(offset) * power.real - np.sin(offset) * power.imag)
    return out


def add_deviation(normal: np.ndarray, deviation: np.ndarray, ratio_db: float) -> np.ndarray:
    """``normal + c * deviation``, ``c`` chosen so the added energy is ``ratio_db`` re normal's."""
    d = rms(deviation)
    if d == 0.0:
        return normal
    return np.asarray(normal + deviation * (rms(normal) * 10.0 ** (ratio_db / 20.0) / d))


def _jitter(rng: np.random.Generator, amps: list[float], spread: float = 0.2) -> np.ndarray:
    """Per-clip variation of a component's harmonic profile (log-normal, ``spread`` in nepers)."""
    return np.asarray(amps) * rng.lognormal(0.0, spread, len(amps))


def _fault_error(machine: str, anomaly: str, kinds: tuple[str, ...]) -> ValueError:
    return ValueError(f"unknown {machine} anomaly {anomaly!r}; known: {', '.join(kinds)}")


# ----------------------------------------------------------------------------- bearing

BEARING_BALLS = 9
BEARING_BALL_RATIO = 0.25  # ball diameter / pitch diameter, zero contact angle
# Defect frequencies per shaft revolution (standard rolling-bearing kinematics).
BPFO = BEARING_BALLS / 2.0 * (1.0 - BEARING_BALL_RATIO)  # outer race: 3.375 x shaft
BPFI = BEARING_BALLS / 2.0 * (1.0 + BEARING_BALL_RATIO)  # inner race: 5.625 x shaft
FTF = 0.5 * (1.0 - BEARING_BALL_RATIO)  # cage: 0.375 x shaft
# Structural modes of the housing (Hz, bandwidth Hz, relative amplitude): what an impact rings.
BEARING_MODES = ((2200.0, 300.0, 0.6), (3100.0, 260.0, 1.0), (4600.0, 450.0, 0.5))
# Microphone position: spectral tilt in dB per octave re 1 kHz (further away = duller).
BEARING_LOC_TILT = {"A": 0.0, "B": -1.5, "C": -3.0, "D": 1.0}
BEARING_ANOMALIES = ("outer_race", "inner_race")


def bearing(
    rng: np.random.Generator,
    seconds: float,
    sample_rate: int,
    attrs: Mapping[str, str],
    anomaly: str | None = None,
    ratio_db: float = -10.0,
) -> np.ndarray:
    """Rolling-element bearing on a shaft at ``vel`` rpm, heard from position ``loc``."""
    n, sr = n_samples(seconds, sample_rate), sample_rate
    fr = float(attrs["vel"]) / 60.0 * wander(rng, n, sr, 0.003, 2.0)
    theta = rotation(rng, fr, sr)
    speed = float(attrs["vel"]) / 1200.0

    shaft = _unit(harmonics(rng, theta, _jitter(rng, [1.0, 0.6, 0.3, 0.2, 0.12, 0.08])))
    # Rolling noise: balls over the races, slightly modulated as the cage carries them round.
    cage = 1.0 + 0.15 * np.cos(FTF * theta + rng.uniform(0.0, TAU))
    rolling = shaped_noise(rng, n, sr, band(400.0, 2500.0)) * cage
    modes = [(f * rng.uniform(0.99, 1.01), bw, a) for f, bw, a in BEARING_MODES]

    def ring(index: np.ndarray, amp: np.ndarray) -> np.ndarray:
        out = np.zeros(n)
        for f, bw, a in modes:
            out += a * strikes(n, sr, index, amp, f, bw)
        return out

    # The housing always rings a little: driven by the rolling noise and by debris (~3 hits/s).
    hum = _unit(resonate(rolling, sr, modes[1][0], 4 * modes[1][1]))
    debris = rng.integers(0, n, rng.poisson(3.0 * seconds))
    x = 0.3 * shaft + 0.6 * speed * rolling + 0.15 * speed * hum
    x = x + 0.1 * speed * ring(debris, rng.uniform(0.2, 1.0, debris.size))

    if anomaly is not None:
        if anomaly not in BEARING_ANOMALIES:
            raise _fault_error("bearing", anomaly, BEARING_ANOMALIES)
        order = BPFO if anomaly == "outer_race" else BPFI
        idx = crossings(order * theta / TAU + rng.uniform())
        # Slip: the balls do not roll perfectly, so impacts wander by ~1 % of a period.
        period = sr / (order * float(np.mean(fr)))
        idx = idx + np.round(rng.normal(0.0, 0.01 * period, idx.size)).astype(np.int64)
        amp = rng.uniform(0.85, 1.15, idx.size)
        if anomaly == "inner_race":
            # The spall turns with the shaft and hits hardest in the load zone.
            zone = rng.uniform(0.0, TAU)
            amp *= 0.25 + 0.75 * (0.5 + 0.5 * np.cos(theta[np.clip(idx, 0, n - 1)] - zone)) ** 2
        x = add_deviation(x, ring(idx, amp), ratio_db)

    tilt = BEARING_LOC_TILT[attrs["loc"]]
    return equalize(x, sr, lambda f: tilt * np.log2(np.clip(f, 200.0, 8000.0) / 1000.0))


# ----------------------------------------------------------------------------- gearbox

GEAR_TEETH = 23
GEAR_MOTOR_RATIO, GEAR_COMMUTATOR_SEGMENTS = 3.0, 6
GEAR_IMPACT_HZ, GEAR_IMPACT_BW = 1900.0, 300.0
GEARBOX_ANOMALIES = ("broken_tooth", "wear")


def gearbox(
    rng: np.random.Generator,
    seconds: float,
    sample_rate: int,
    attrs: Mapping[str, str],
    anomaly: str | None = None,
    ratio_db: float = -10.0,
) -> np.ndarray:
    """DC-motor-driven gearbox at ``volt`` volts lifting ``wt`` grams."""
    n, sr = n_samples(seconds, sample_rate), sample_rate
    volt, weight = float(attrs["volt"]), float(attrs["wt"])
    # A DC motor's speed follows its voltage and sags a little under load.
    fr = 6.0 * volt * (1.0 - 0.002 * weight) * wander(rng, n, sr, 0.004, 3.0)
    theta = rotation(rng, fr, sr)
    load = 1.0 + weight / 60.0

    # Healthy gears still have a little run-out: weak sidebands at the shaft rate.
    runout = 1.0 + rng.uniform(0.03, 0.08) * np.cos(theta + rng.uniform(0.0, TAU))
    mesh = _unit(harmonics(rng, GEAR_TEETH * theta, _jitter(rng, [1.0, 0.45, 0.2, 0.1])))
    mesh *= load * runout
    motor_phase = GEAR_MOTOR_RATIO * theta
    commutation = 1.0 + 0.5 * np.cos(GEAR_COMMUTATOR_SEGMENTS * motor_phase)
    brush = shaped_noise(rng, n, sr, band(2500.0, 7000.0)) * commutation
    motor = _unit(harmonics(rng, motor_phase, _jitter(rng, [0.2, 1.0, 0.3])))
    gear_noise = shaped_noise(rng, n, sr, band(150.0, 2500.0))
    x = mesh + 0.3 * brush + 0.3 * motor + 0.25 * load * gear_noise

    if anomaly == "broken_tooth":
        # Once per revolution the mesh loses a tooth's worth of contact and the next tooth hits.
        where = rng.uniform(0.0, TAU)
        gap = np.exp(-0.5 * (wrap(theta - where) / (1.5 * TAU / GEAR_TEETH)) ** 2)
        lost = -mesh * gap
        idx = crossings((theta - where) / TAU + 0.5 + 0.75 / GEAR_TEETH)
        hits = strikes(n, sr, idx, 1.0, GEAR_IMPACT_HZ, GEAR_IMPACT_BW)
        x = add_deviation(x, lost + _unit(hits) * max(rms(lost), 1e-12), ratio_db)
    elif anomaly == "wear":
        # Worn or eccentric teeth: mesh strongly modulated at 1x-3x the shaft rate.
        shape = harmonics(rng, theta, _jitter(rng, [1.0, 0.7, 0.4], 0.4))
        x = add_deviation(x, mesh * shape, ratio_db)
    elif anomaly is not None:
        raise _fault_error("gearbox", anomaly, GEARBOX_ANOMALIES)
    return x


# ----------------------------------------------------------------------------- fan

FAN_BLADES = 7
FAN_PULSE_WIDTH = 0.06  # rad of shaft angle: a blade's pressure pulse as it passes the mic
FAN_TURBULENCE = {"1": 0.5, "2": 0.8, "3": 1.2}  # more throttling, more turbulent flow
FAN_ANOMALIES = ("imbalance", "blade")


def fan(
    rng: np.random.Generator,
    seconds: float,
    sample_rate: int,
    attrs: Mapping[str, str],
    anomaly: str | None = None,
    ratio_db: float = -10.0,
) -> np.ndarray:
    """Axial fan with 7 blades at ``spd`` rpm in duct mode ``mode``."""
    n, sr = n_samples(seconds, sample_rate), sample_rate
    fr = float(attrs["spd"]) / 60.0 * wander(rng, n, sr, 0.003, 1.5)
    theta = rotation(rng, fr, sr)

    # Blade pulses as a function of shaft angle: identical blades give only blade-pass harmonics.
    width = FAN_PULSE_WIDTH * rng.uniform(0.95, 1.05)
    # The pulses are far narrower than the blade spacing, so only the nearest blade counts.
    spacing = TAU / FAN_BLADES
    nearest = np.mod(theta + spacing / 2.0, spacing) - spacing / 2.0
    tonal = np.exp(-0.5 * (nearest / width) ** 2)
    tonal = _unit(tonal - tonal.mean())
    # Turbulence, a little louder as each blade passes.
    turb = shaped_noise(rng, n, sr, lambda f: band(60.0, 7000.0, 1)(f) / np.sqrt(1 + f / 500.0))
    turb *= 1.0 + 0.15 * tonal
    x = tonal + FAN_TURBULENCE[attrs["mode"]] * rng.uniform(0.9, 1.1) * turb

    if anomaly == "imbalance":
        # An unbalanced rotor swings the tonal sound at 1x and shakes the housing at 1x, 2x.
        # The wobbling rotor also swings its tip clearance, so the turbulence swings too.
        wobble = np.cos(theta + rng.uniform(0.0, TAU))
        swing = (tonal + FAN_TURBULENCE[attrs["mode"]] * turb) * wobble
        shake = harmonics(rng, theta, [1.0, 0.5])
        x = add_deviation(x, swing + 0.7 * _unit(shake) * rms(swing), ratio_db)
    elif anomaly == "blade":
        # One damaged blade: its pulse differs in size and shape, a once-per-revolution pattern.
        k = rng.integers(FAN_BLADES)
        odd = np.exp(-0.5 * (wrap(theta - k * spacing) / (1.4 * width)) ** 2)
        x = add_deviation(x, rng.choice([-1.0, 1.0]) * (odd - odd.mean()), ratio_db)
    elif anomaly is not None:
        raise _fault_error("fan", anomaly, FAN_ANOMALIES)
    return x


# ----------------------------------------------------------------------------- valve

# Pattern id -> (cycle period in s, ((open, close) times within the cycle in s), ...).
VALVE_PATTERNS: dict[str, tuple[float, tuple[tuple[float, float], ...]]] = {
    "00": (0.8, ((0.00, 0.30),)),
    "01": (1.0, ((0.00, 0.20), (0.45, 0.65))),
    "02": (0.6, ((0.00, 0.15),)),
    "03": (1.2, ((0.00, 0.50), (0.70, 0.80))),
    "04": (0.5, ((0.00, 0.10), (0.20, 0.30))),
}
VALVE_ANOMALIES = ("timing", "leak", "chatter")


def _valve_gate(on: np.ndarray, off: np.ndarray, n: int, sample_rate: int) -> np.ndarray:
    """Valve opening (n,) in [0, 1] from open/close times in s: a step per event, then smoothed
    by the plunger's ~4 ms travel."""
    steps = np.zeros(n + 1)
    np.add.at(steps, np.clip(np.round(on * sample_rate).astype(np.int64), 0, n), 1.0)
    np.add.at(steps, np.clip(np.round(off * sample_rate).astype(np.int64), 0, n), -1.0)
    gate = np.clip(np.cumsum(steps)[:n], 0.0, 1.0)
    a = np.exp(-1.0 / (0.004 * sample_rate))
    return np.asarray(signal.lfilter([1.0 - a], [1.0, -a], gate))


def _timing_faults(
    rng: np.random.Generator, on: np.ndarray, off: np.ndarray, seconds: float, severity: float
) -> tuple[np.ndarray, np.ndarray]:
    """Make about ``severity`` (0..1) of the events in the clip (at least one) go wrong.

    ``on``, ``off``: open and close times in s, (events,), in time order. A faulty event opens
    late (by up to ``severity`` of its open time) or, with probability ``severity``, fails
    outright: it sticks closed (never opens) or sticks open (closes only just before the next
    event). Returns new ``(on, off)`` arrays.
    """
    inside = np.flatnonzero((on >= 0.0) & (on < seconds))
    if inside.size == 0:
        return on, off
    faulty = inside[rng.random(inside.size) < severity]
    if faulty.size == 0:
        faulty = rng.choice(inside, 1)
    fails = rng.random(faulty.size) < severity
    stuck = rng.random(faulty.size) < 0.5
    on, off = on.copy(), off.copy()
    late = faulty[~fails]
    on[late] += rng.uniform(0.5, 1.0, late.size) * severity * (off[late] - on[late])
    stuck_open = faulty[fails & ~stuck]
    nxt = np.append(on[1:], max(seconds, on[-1]) + 1.0)  # the last one stays open past the end
    off[stuck_open] = np.maximum(off[stuck_open], nxt[stuck_open] - 0.01)
    keep = np.ones(on.size, dtype=bool)
    keep[faulty[fails & stuck]] = False
    return on[keep], off[keep]


def valve(
    rng: np.random.Generator,
    seconds: float,
    sample_rate: int,
    attrs: Mapping[str, str],
    anomaly: str | None = None,
    ratio_db: float = -10.0,
) -> np.ndarray:
    """Solenoid valve switching on schedule ``pat`` with flow rate ``flow``."""
    n, sr = n_samples(seconds, sample_rate), sample_rate
    if anomaly is not None and anomaly not in VALVE_ANOMALIES:
        raise _fault_error("valve", anomaly, VALVE_ANOMALIES)
    period, windows = VALVE_PATTERNS[attrs["pat"]]
    flow = float(attrs["flow"])
    start = -rng.uniform(0.0, period)  # the recording starts anywhere in the cycle
    base = start + period * np.arange(int(np.ceil((seconds - start) / period)) + 1)
    w = np.asarray(windows)
    on = (base[:, None] + w[None, :, 0]).ravel() + rng.normal(0.0, 0.002, base.size * len(w))
    off = (base[:, None] + w[None, :, 1]).ravel() + rng.normal(0.0, 0.002, base.size * len(w))
    if anomaly == "timing":
        # Timing faults reshape the sound instead of adding to it: the share of faulty events
        # grows with the fault's strength (amplitude ratio, 0 dB = every event).
        on, off = _timing_faults(rng, on, off, seconds, min(1.0, 10.0 ** (ratio_db / 20.0)))
    gate = _valve_gate(on, off, n, sr)

    def clicks(times: np.ndarray, amp: float, freq: float, bw: float) -> np.ndarray:
        idx = np.round(times * sr).astype(np.int64)
        return strikes(n, sr, idx, amp * rng.uniform(0.85, 1.15, idx.size), freq, bw)

    mech = clicks(on, 1.0, 2600.0, 500.0) + clicks(off, 1.4, 1700.0, 350.0)
    mech += clicks(off, 0.6, 350.0, 120.0)  # the plunger's thump on its seat
    centre = 1200.0 + 350.0 * flow
    hiss = shaped_noise(rng, n, sr, band(centre / 2.0, centre * 2.0)) * gate
    buzz = harmonics(rng, TAU * 100.0 * np.arange(n) / sr, [1.0, 0.5, 0.3, 0.2]) * gate
    # The supply line hisses faintly all the time (the pressure is always there).
    line = shaped_noise(rng, n, sr, band(200.0, 8000.0, 1))
    # Fixed absolute scales (not per-clip normalisation), so a missing event changes the mix.
    x = 0.06 * mech + 0.25 * np.sqrt(flow / 4.0) * hiss + 0.05 * buzz + 0.05 * line

    if anomaly == "leak":
        # Gas seeping through a worn seat while the valve is shut: flow hiss, higher-pitched
        # through the narrow gap, and a faint whistle.
        seep = shaped_noise(rng, n, sr, band(0.75 * centre, 3.0 * centre))
        whistle = shaped_noise(rng, n, sr, band(4800.0, 5600.0, 4))
        # 6 dB below the asked ratio: heard in the quiet gaps, a leak stands out at less energy.
        x = add_deviation(x, (seep + 0.3 * whistle) * (1.0 - gate), ratio_db - 6.0)
    elif anomaly == "chatter":
        # The plunger bounces up to 4 times after closing, each bounce weaker; the light
        # re-impacts rattle the armature against its stop: a higher, drier tick than the close.
        closes = off[(off >= 0.0) & (off < seconds)]
        bounce_times, bounce_amps = [], []
        for b in range(1, 5):
            bounce_times.append(closes + rng.uniform(0.006, 0.012, closes.size) * b)
            bounce_amps.append(np.full(closes.size, 0.6**b) * (rng.random(closes.size) < 0.8))
        idx = np.round(np.concatenate(bounce_times) * sr).astype(np.int64)
        bounces = strikes(n, sr, idx, np.concatenate(bounce_amps), 3400.0, 700.0)
        x = add_deviation(x, bounces, ratio_db)
    return np.asarray(x)


# ----------------------------------------------------------------------------- slider

SLIDER_SCREW_PITCH_MM, SLIDER_BALL_ORDER = 5.0, 3.5  # ball-screw: balls passing per turn
SLIDER_SQUEAL_HZ = 1150.0
SLIDER_RAIL_HZ, SLIDER_RAIL_BW = 2800.0, 300.0
SLIDER_ANOMALIES = ("rail_damage", "dry")


def slider(
    rng: np.random.Generator,
    seconds: float,
    sample_rate: int,
    attrs: Mapping[str, str],
    anomaly: str | None = None,
    ratio_db: float = -10.0,
) -> np.ndarray:
    """Linear slide moving at mean speed ``vel`` mm/s over ``stroke`` mm, back and forth."""
    n, sr = n_samples(seconds, sample_rate), sample_rate
    vel, stroke = float(attrs["vel"]), float(attrs["stroke"])
    period = 2.0 * stroke / vel * rng.uniform(0.98, 1.02)
    t = np.arange(n) / sr
    # Position x = stroke/2 (1 - cos(phase)), so the speed peaks mid-stroke at pi/2 x mean speed.
    phase = TAU * t / period + rng.uniform(0.0, TAU)
    position = 0.5 * stroke * (1.0 - np.cos(phase))
    speed = np.abs(np.sin(phase))  # relative to the peak speed
    v_peak = np.pi * stroke / period

    friction = shaped_noise(rng, n, sr, band(300.0, 6000.0, 1)) * speed**0.8
    # Ball-screw tones: their pitch follows the speed (turns per second = speed / pitch).
    f_balls = SLIDER_BALL_ORDER * v_peak * speed / SLIDER_SCREW_PITCH_MM
    screw = harmonics(rng, TAU * np.cumsum(f_balls) / sr, _jitter(rng, [1.0, 0.5, 0.25]))
    screw *= speed
    # Stick-slip squeal where the carriage slows down to reverse.
    f_sq = SLIDER_SQUEAL_HZ * rng.uniform(0.98, 1.02)
    squeal_phase = TAU * f_sq * t + 0.3 * np.sin(TAU * 7.0 * t)
    squeal = harmonics(rng, squeal_phase, [1.0, 0.4, 0.15]) * np.exp(-((speed / 0.15) ** 2))
    x = 0.7 * friction + 0.5 * screw + 0.4 * squeal

    if anomaly == "rail_damage":
        # A dent in the rail clicks whenever the carriage passes it, harder at higher speed.
        dent = rng.uniform(0.25, 0.75) * stroke
        idx = np.flatnonzero(np.diff(np.sign(position - dent)) != 0) + 1
        amp = speed[idx] * rng.uniform(0.85, 1.15, idx.size)
        click = strikes(n, sr, idx, amp, SLIDER_RAIL_HZ, SLIDER_RAIL_BW)
        click += 0.5 * strikes(n, sr, idx, amp, 900.0, 150.0)
        x = add_deviation(x, click, ratio_db)
    elif anomaly == "dry":
        # Lost lubrication: harsher, brighter friction, and squeal up to higher speeds.
        harsh = shaped_noise(rng, n, sr, band(2000.0, 7000.0)) * speed**1.2
        wide = np.exp(-((speed / 0.45) ** 2))
        screech = harmonics(rng, 1.3 * squeal_phase, [1.0, 0.5]) * wide
        x = add_deviation(x, harsh + 0.5 * _unit(screech) * rms(harsh), ratio_db)
    elif anomaly is not None:
        raise _fault_error("slider", anomaly, SLIDER_ANOMALIES)
    return x


# ----------------------------------------------------------------------------- the room


def background(rng: np.random.Generator, n: int, sample_rate: int, domain: str) -> np.ndarray:
    """Factory background (n,), unit RMS: coloured noise plus mains hum.

    Source domain: pink noise and 50-Hz hum; target domain: brown (rumbling) noise and 60-Hz
    hum, i.e. another plant. The hum's share varies per clip.
    """
    exponent, mains = (1.0, 50.0) if domain == "source" else (2.0, 60.0)
    noise = shaped_noise(rng, n, sample_rate, power_law(exponent))
    t = np.arange(n) / sample_rate
    # Transformer hum: mostly 2x and odd multiples of the mains frequency.
    hum = harmonics(rng, TAU * mains * t, [0.3, 1.0, 0.5, 0.3, 0.2])
    return _unit(noise + rng.uniform(0.1, 0.6) * _unit(hum))


def snr_db(rng: np.random.Generator, domain: str) -> float:
    """Machine-to-background ratio of one clip, dB: the target plant is noisier."""
    return float(rng.uniform(12.0, 22.0) if domain == "source" else rng.uniform(6.0, 16.0))


def microphone(rng: np.random.Generator, x: np.ndarray, sample_rate: int) -> np.ndarray:
    """Colour ``x`` (n,) with a random gentle microphone response: a smooth +-2 dB ripple over
    log frequency and a high-pass roll-off between 20 and 60 Hz."""
    nyquist = sample_rate / 2.0
    order = np.arange(1, 5)[:, None]
    coef, shift = rng.normal(0.0, 0.7, (4, 1)), rng.uniform(0.0, TAU, (4, 1))
    cutoff = rng.uniform(20.0, 60.0)

    def gain_db(f: np.ndarray) -> np.ndarray:
        f = np.maximum(f, 1.0)
        u = np.log2(np.maximum(f, 20.0) / 20.0) / np.log2(nyquist / 20.0)
        ripple = np.sum(coef * np.cos(order * np.pi * u[None, :] + shift), axis=0)
        return np.asarray(ripple - 10.0 * np.log10(1.0 + (cutoff / f) ** 4))

    return equalize(x, sample_rate, gain_db)


# ----------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class MachineType:
    """One machine type: its generator, attribute values per domain and fault kinds.

    ``attributes[domain][name]`` lists the values a clip of that domain may take; the order of the
    names is the order in file names and in ``attributes_00.csv``. ``fault_db`` is added to the
    fault ratio the difficulty asks for: equal dB is not equal audibility (a bearing's spall rings
    modes that the rolling noise already fills; a gearbox fault lands between mesh lines), so these
    offsets, measured with a simple log-mel detector, make one difficulty about equally hard
    for every type.
    """

    name: str
    generate: Generator
    attributes: Mapping[str, Mapping[str, tuple[str, ...]]]
    anomalies: tuple[str, ...]
    fault_db: float = 0.0


MACHINE_TYPES: dict[str, MachineType] = {
    m.name: m
    for m in (
        MachineType(
            "bearing",
            bearing,
            {
                "source": {"vel": ("900", "1200", "1500"), "loc": ("A", "B")},
                "target": {"vel": ("2100", "2400"), "loc": ("C", "D")},
            },
            BEARING_ANOMALIES,
            fault_db=7.0,
        ),
        MachineType(
            "fan",
            fan,
            {
                "source": {"spd": ("900", "1050", "1200"), "mode": ("1", "2")},
                "target": {"spd": ("1500", "1650"), "mode": ("3",)},
            },
            FAN_ANOMALIES,
            fault_db=2.5,
        ),
        MachineType(
            "gearbox",
            gearbox,
            {
                "source": {"volt": ("1.0", "1.5", "2.0"), "wt": ("0", "30")},
                "target": {"volt": ("2.5", "3.0"), "wt": ("80",)},
            },
            GEARBOX_ANOMALIES,
            fault_db=-1.5,
        ),
        MachineType(
            "valve",
            valve,
            {
                "source": {"pat": ("00", "01", "02"), "flow": ("2", "4")},
                "target": {"pat": ("03", "04"), "flow": ("6",)},
            },
            VALVE_ANOMALIES,
            fault_db=2.5,
        ),
        MachineType(
            "slider",
            slider,
            {
                "source": {"vel": ("200", "300", "400"), "stroke": ("100", "150")},
                "target": {"vel": ("600", "700"), "stroke": ("200",)},
            },
            SLIDER_ANOMALIES,
            fault_db=2.5,
        ),
    )
}
