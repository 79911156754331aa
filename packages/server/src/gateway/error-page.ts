/** The small HTML page the gateway answers with when it cannot route a request. */
const escapeHtml = (s: string) =>
  s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);

/** `refreshSeconds`: the browser loads the page again after that long (a waking environment). */
export function errorPage(status: number, title: string, detail: string, refreshSeconds?: number): string {
  const refresh = refreshSeconds
    ? `<meta http-equiv="refresh" content="${Math.max(1, Math.round(refreshSeconds))}">`
    : '';
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8">${refresh}<title>${status} ${escapeHtml(title)} · Mayfly</title>
<style>body{font:16px/1.5 system-ui,sans-serif;max-width:40rem;margin:4rem auto;padding:0 1rem;color:#222}
h1{font-size:1.4rem}code{background:#f3f3f3;padding:.1rem .3rem;border-radius:3px}small{color:#777}</style></head>
<body><h1>${status} · ${escapeHtml(title)}</h1><p>${escapeHtml(detail)}</p>
<p><small>Mayfly gateway. Environment URLs look like <code>http://&lt;service&gt;--&lt;environment&gt;.&lt;domain&gt;/</code>;
<code>mayfly ls</code> lists them.</small></p></body></html>
`;
}
