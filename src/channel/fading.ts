// Small-scale fading as a process in time, from a seeded random source: a complex Gaussian g (CN(0,1))
// that evolves as a first-order Gauss-Markov process, g' = ρ·g + √(1−ρ²)·w, with ρ from the
// configured correlation; Rayleigh fading is h = g, Rician h = √(K/(K+1))·e^{jφ} + √(1/(K+1))·g.
// Either way E|h|² = 1, so fading scales the mean received power by nothing on average.
import { Random } from "../util/random.js";

export type Fading = { model: "none" } | { model: "rayleigh" } | { model: "rician"; kFactor: number };

export type Correlation =
  /** a fresh draw at every step */
  | { model: "iid" }
  /** correlation ρ between draws `stepMs` apart (ρ^(Δt/stepMs) for other gaps) */
  | { model: "gauss-markov"; rho: number; stepMs: number }
  /** Clarke/Jakes: ρ(Δt) = J0(2π·f_D·Δt) for a maximum Doppler shift f_D */
  | { model: "jakes"; dopplerHz: number };

/** Bessel J0(x) = (1/2π) ∫ cos(x sin θ) dθ over a period; the trapezoid rule is exact to rounding once it has more points than x. */
export function besselJ0(x: number): number {
  const n = Math.max(64, Math.ceil(Math.abs(x)) + 32);
  let s = 0;
  for (let i = 0; i < n; i++) s += Math.cos(x * Math.sin((2 * Math.PI * i) / n));
  return s / n;
}

/** Correlation between fading draws `dtMs` apart. */
export function correlationAfter(c: Correlation, dtMs: number): number {
  if (dtMs <= 0) return 1;
  if (c.model === "iid") return 0;
  if (c.model === "gauss-markov") return c.rho ** (dtMs / c.stepMs);
  return besselJ0(2 * Math.PI * c.dopplerHz * (dtMs / 1000));
}

/** Runs advance by the same few steps again and again (a token, a slot), for every device of a cell: J0 once per step length. */
const correlationCache = new WeakMap<Correlation, Map<number, number>>();
const CACHE_LIMIT = 4096;

function cachedCorrelation(c: Correlation, dtMs: number): number {
  let m = correlationCache.get(c);
  if (!m) correlationCache.set(c, (m = new Map()));
  let rho = m.get(dtMs);
  if (rho === undefined) {
    if (m.size >= CACHE_LIMIT) m.clear();
    m.set(dtMs, (rho = correlationAfter(c, dtMs)));
  }
  return rho;
}

export class FadingProcess {
  private re: number;
  private im: number;
  private readonly losPhase: number;
  /** the last step's length, correlation and innovation scale: a process mostly moves on by the same step */
  private lastDtMs = NaN;
  private rho = 0;
  private innovation = 0;

  constructor(private readonly fading: Fading, private readonly correlation: Correlation, private readonly rng: Random) {
    // CN(0,1): real and imaginary parts N(0, 1/2)
    this.re = rng.normal() * Math.SQRT1_2;
    this.im = rng.normal() * Math.SQRT1_2;
    this.losPhase = rng.next() * 2 * Math.PI;
  }

  /** Moves the process on by `dtMs`. */
  advance(dtMs: number): void {
    if (dtMs <= 0) return;
    if (dtMs !== this.lastDtMs) {
      this.lastDtMs = dtMs;
      this.rho = cachedCorrelation(this.correlation, dtMs);
      this.innovation = Math.sqrt(Math.max(0, 1 - this.rho * this.rho)) * Math.SQRT1_2;
    }
    this.re = this.rho * this.re + this.innovation * this.rng.normal();
    this.im = this.rho * this.im + this.innovation * this.rng.normal();
  }

  /** |h|² now. */
  power(): number {
    const f = this.fading;
    if (f.model === "none") return 1;
    if (f.model === "rayleigh") return this.re * this.re + this.im * this.im;
    const los = Math.sqrt(f.kFactor / (f.kFactor + 1)), nlos = Math.sqrt(1 / (f.kFactor + 1));
    const re = los * Math.cos(this.losPhase) + nlos * this.re, im = los * Math.sin(this.losPhase) + nlos * this.im;
    return re * re + im * im;
  }
}
