// The pieces of a SentencePiece model file (tokenizer.model, a protobuf ModelProto): each piece's text,
// score and type, read the way sentencepiece's IdToPiece / GetScore / IsControl … report them. Only
// field 1 (repeated SentencePiece) is read; every other field is skipped by its wire type. The file is
// outside input: every length is checked against the bytes that remain.

/** sentencepiece_model.proto SentencePiece.Type */
export const PIECE_TYPE = { normal: 1, unknown: 2, control: 3, userDefined: 4, byte: 6, unused: 5 } as const;

export interface SentencePiece {
  readonly piece: string;
  readonly score: number;
  readonly type: number;
}

class Reader {
  pos = 0;
  constructor(private readonly b: Uint8Array, readonly end: number, private readonly fail: (msg: string) => never) {}

  varint(): number {
    let v = 0, mul = 1;
    for (let i = 0; i < 10; i++) {
      if (this.pos >= this.end) this.fail("a varint runs past the end");
      const byte = this.b[this.pos++]!;
      v += (byte & 0x7f) * mul;
      if (!(byte & 0x80)) return v;
      mul *= 128;
    }
    return this.fail("a varint is longer than 10 bytes");
  }

  bytes(n: number): Uint8Array {
    if (n > this.end - this.pos) this.fail(`a field of ${n} bytes runs past the end`);
    const out = this.b.subarray(this.pos, this.pos + n);
    this.pos += n;
    return out;
  }

  skip(wire: number): void {
    if (wire === 0) this.varint();
    else if (wire === 1) this.bytes(8);
    else if (wire === 2) this.bytes(this.varint());
    else if (wire === 5) this.bytes(4);
    else this.fail(`unsupported protobuf wire type ${wire}`);
  }
}

export function parseSentencePieceModel(bytes: Uint8Array, file: string): SentencePiece[] {
  const fail = (msg: string): never => {
    throw new Error(`${file}: not a SentencePiece model (${msg})`);
  };
  const utf8 = new TextDecoder("utf-8", { fatal: true });
  const r = new Reader(bytes, bytes.length, fail);
  const pieces: SentencePiece[] = [];
  while (r.pos < r.end) {
    const key = r.varint();
    if (key >>> 3 !== 1 || (key & 7) !== 2) {
      r.skip(key & 7);
      continue;
    }
    const body = r.bytes(r.varint());
    const p = new Reader(body, body.length, fail);
    let piece: string | undefined, score = 0, type: number = PIECE_TYPE.normal;
    while (p.pos < p.end) {
      const k = p.varint();
      const field = k >>> 3, wire = k & 7;
      if (field === 1 && wire === 2) {
        const text = p.bytes(p.varint());
        try {
          piece = utf8.decode(text);
        } catch {
          fail(`piece ${pieces.length} is not valid UTF-8`);
        }
      } else if (field === 2 && wire === 5) {
        const b4 = p.bytes(4);
        score = new DataView(b4.buffer, b4.byteOffset, 4).getFloat32(0, true);
      } else if (field === 3 && wire === 0) type = p.varint();
      else p.skip(wire);
    }
    if (piece === undefined) fail(`piece ${pieces.length} has no text`);
    if (type < 1 || type > 6) fail(`piece ${pieces.length} has unknown type ${type}`);
    pieces.push({ piece: piece!, score, type });
  }
  if (pieces.length === 0) fail("no pieces");
  return pieces;
}
