// Expert executors: whatever computes an expert's FFN for a batch of rows. This executor runs
// in-process; remote devices and near-data workers implement the same interface.

/** One expert applied to a batch of token rows. Stateless: any replica can serve it. */
export interface ExpertCall {
  readonly layer: number;
  readonly expert: number;
  readonly rows: number;
  /**
   * rows × hidden activations (the FFN input after the post-attention norm). It may be a view of the
   * engine's own activations, unchanged until the call's promise settles: an executor that needs it
   * after that copies it.
   */
  readonly input: Float32Array;
}

/** An expert call's outputs and where its time went. */
export interface ExpertResult {
  /** rows × hidden expert outputs, before the routing weight is applied */
  readonly output: Float32Array;
  /** time the expert's computation took where it ran */
  readonly computeMs: number;
  /** time from sending the call to having the result (equal to computeMs in-process) */
  readonly roundTripMs: number;
  /** the device that computed it (absent: this process) */
  readonly device?: string;
}

/**
 * No live host can serve some expert of a step: computing it anyway would drop that expert for every
 * row routed to it. The step fails instead, and the base station answers 503 with this message.
 */
export class ExpertsUnavailable extends Error {}

export interface ExpertExecutor {
  /**
   * Starts all of one MoE layer's expert calls of a step at once and gives one promise per call, in
   * order; a promise rejects when its call failed for good. Seeing the whole layer lets a remote
   * executor send one frame per device.
   */
  dispatch(calls: readonly ExpertCall[]): Array<Promise<ExpertResult>>;
  /** Calls that failed on one host and were sent to another, so far (executors with replicas). */
  readonly retries?: number;
  /** Results refused as implausible (non-finite or out of bounds) and failed like a lost device, so far (remote executors). */
  readonly rejectedResults?: number;
  /** Calls whose result was compared with a second holder's (spot checks), so far (remote executors). */
  readonly verifiedCalls?: number;
  /** Results that disagreed with the base station's own in a spot check, so far (remote executors). */
  readonly mismatchedResults?: number;
  /** Frees what the executor holds in the engine's backend (executors built from it). */
  close?(): void;
}
