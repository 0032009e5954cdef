// The browser join link as a QR code in the terminal, for a phone's camera: two rows of modules per line
// of half-block characters, light modules drawn (a terminal's text is light on dark), with the quiet
// border scanners need.
import { renderUnicodeCompact } from "uqr";

/** Modules of light margin around the code (the standard asks for 4; 2 scans reliably off a screen and keeps it small). */
export const QR_BORDER = 2;

export function joinQr(link: string): string {
  return renderUnicodeCompact(link, { border: QR_BORDER, ecc: "L" });
}
