// The admin's controls: the selection policy and its knob, the link emulation, the browser join link and
// its QR code, and the admitted devices with revoke. Shown only to a key the base station takes at /admin
// (the server refuses every other key there whatever the page shows).
import { $, call, callJson, el } from "./api.js";

type PolicySpec = { name: "topk" } | { name: "wlr"; theta: number } | { name: "deadline"; budgetMs: number };
interface Link { downBps: number; upBps: number; delayMs: number; jitterMs: number; loss: number }
interface Admitted { fingerprint: string; name: string; experts: Array<[number, number]>; lastSeen: string; connected: boolean }

/** Whether `key` is an admin key: then the controls are set up and shown. */
export async function showControls(key: string): Promise<boolean> {
  const r = await call("/admin/policy", key);
  if (!r.ok) return false;
  $("controls").hidden = false;
  const result = (text: string, error = false) => {
    $("control-result").textContent = text;
    $("control-result").className = error ? "error" : "note";
  };
  const act = (f: () => Promise<string>) => f().then((t) => result(t), (e: Error) => result(e.message, true));

  const name = $<HTMLSelectElement>("policy-name"), knob = $<HTMLInputElement>("policy-knob");
  const showPolicy = (p: PolicySpec) => {
    name.value = p.name;
    knob.value = p.name === "wlr" ? String(p.theta) : p.name === "deadline" ? String(p.budgetMs) : "";
    knob.disabled = p.name === "topk";
  };
  showPolicy(((await r.json()) as { policy: PolicySpec }).policy);
  name.onchange = () => (knob.disabled = name.value === "topk");
  $("policy-form").onsubmit = (e) => {
    e.preventDefault();
    const spec = name.value === "wlr" ? { name: "wlr", theta: Number(knob.value) } : name.value === "deadline" ? { name: "deadline", budgetMs: Number(knob.value) } : { name: "topk" };
    act(async () => {
      const set = await callJson<{ policy: PolicySpec; description: string }>("/admin/policy", key, { method: "PUT", body: JSON.stringify(spec) });
      showPolicy(set.policy);
      return `policy: ${set.description}`;
    });
  };

  const link = await call("/admin/link", key);
  if (link.ok) {
    $("link-form").hidden = false;
    const fields = { downBps: $<HTMLInputElement>("link-down"), upBps: $<HTMLInputElement>("link-up"), delayMs: $<HTMLInputElement>("link-delay"), loss: $<HTMLInputElement>("link-loss") };
    const showLink = (l: Link) => { for (const [k, input] of Object.entries(fields)) input.value = String(l[k as keyof Link]); };
    showLink(((await link.json()) as { link: Link }).link);
    $("link-form").onsubmit = (e) => {
      e.preventDefault();
      const change = Object.fromEntries(Object.entries(fields).filter(([, input]) => input.value !== "").map(([k, input]) => [k, Number(input.value)]));
      act(async () => {
        const set = await callJson<{ link: Link }>("/admin/link", key, { method: "PUT", body: JSON.stringify(change) });
        showLink(set.link);
        return `link: ${JSON.stringify(set.link)}`;
      });
    };
  }

  const join = await call("/admin/join", key);
  if (join.ok) {
    const { link: joinLink, qr_svg } = (await join.json()) as { link: string; qr_svg: string };
    $("join").hidden = false;
    const a = $<HTMLAnchorElement>("join-link");
    a.textContent = joinLink;
    a.href = joinLink;
    // the SVG the base station rendered, shown as an image (no markup of it enters the page)
    const img = el("img", "", { alt: "QR code of the join link", src: `data:image/svg+xml;charset=utf-8,${encodeURIComponent(qr_svg)}` });
    $("qr").replaceChildren(img);
  }

  const admitted = async () => {
    const r = await call("/admin/devices", key);
    if (!r.ok) return void $("admitted").replaceChildren(el("tr", "", {}));
    const { devices } = (await r.json()) as { devices: Admitted[] };
    $("admitted").replaceChildren(...devices.map((d) => {
      const row = el("tr");
      const revoke = el("button", "Revoke") as HTMLButtonElement;
      revoke.onclick = () => act(async () => {
        await callJson(`/admin/devices/${encodeURIComponent(d.fingerprint)}`, key, { method: "DELETE" });
        await admitted();
        return `revoked ${d.name}`;
      });
      const cell = el("td");
      cell.append(revoke);
      row.append(el("td", d.name), el("td", d.connected ? "connected" : `last seen ${d.lastSeen}`), el("td", `${d.experts.length} experts`), cell);
      return row;
    }));
  };
  await admitted();
  setInterval(() => void admitted(), 10_000);
  return true;
}
