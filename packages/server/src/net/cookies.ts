/** Cookies of a request's `Cookie` header, as browsers send them (`a=1; b="2"`), in order. */
export interface Cookie {
  name: string;
  value: string;
  /** As it was in the header, to pass it on unchanged. */
  raw: string;
}

export function parseCookies(header: string | undefined): Cookie[] {
  if (!header) return [];
  return header
    .split(';')
    .map((raw) => raw.trim())
    .filter((raw) => raw !== '')
    .map((raw) => {
      const eq = raw.indexOf('=');
      const value = eq >= 0 ? raw.slice(eq + 1).trim() : '';
      return {
        name: eq >= 0 ? raw.slice(0, eq).trim() : raw,
        value: value.startsWith('"') && value.endsWith('"') && value.length >= 2 ? value.slice(1, -1) : value,
        raw,
      };
    });
}
