// Expert executors: whatever computes an expert's FFN for a batch of rows. This executor runs
// in-process; remote devices and near-data workers implement the same interface.

/** One expert applied to a batch of token rows. Stateless: any replica can serve it. */
export interface ExpertCall {
  readonly layer: number;
  readonly expert: number;
  readonly rows: number;
  /** rows × hidden activations (the FFN input after the post-attention norm) */
  readonly input: Float32Array;
}

export interface ExpertExecutor {
  /** rows × hidden expert outputs, before the routing weight is applied. Rejects when the call failed for good. */
  run(call: ExpertCall): Promise<Float32Array>;
  /** Calls that failed on one host and were sent to another, so far (executors with replicas). */
  readonly retries?: number;
}
