// The account's own settings on the homeserver (docs/api.md, "Registration and clients"):
// display name, directory listing, and deleting the account.
import type { Api } from "./api.js";

export interface AccountSettings {
  displayName: string | null;
  discoverable: boolean;
}

interface Me {
  display_name: string | null;
  discoverable: boolean;
}

const fromMe = (me: Me): AccountSettings => ({ displayName: me.display_name, discoverable: me.discoverable });

export async function readSettings(api: Api): Promise<AccountSettings> {
  return fromMe(await api.json<Me>("GET", "/v1/me"));
}

/** An empty display name clears it (the server then shows the user id alone). */
export async function saveSettings(api: Api, displayName: string, discoverable: boolean): Promise<AccountSettings> {
  const name = displayName.trim();
  return fromMe(await api.json<Me>("PATCH", "/v1/me", { json: { display_name: name === "" ? null : name, discoverable } }));
}

/** Deletes the user, every device and connection on the server, for good. */
export async function deleteAccount(api: Api): Promise<void> {
  await api.request("DELETE", "/v1/me");
}

export interface DirectoryEntry {
  userId: string;
  displayName: string | null;
}

export interface DirectoryPage {
  users: DirectoryEntry[];
  next: string | null;
  /** The domain whose directory answered; null: the home server's own. */
  domain: string | null;
}

// A DNS name as the server accepts it (labels of letters, digits and inner hyphens).
const DOMAIN = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*$/i;

/** The search text split into what to look for and where: "text@domain" searches the
 * directory of that domain's server (asked by ours); anything else searches our own. */
export function directoryQuery(text: string): { query: string; domain: string | null } {
  const t = text.trim();
  const at = t.lastIndexOf("@");
  const domain = at < 0 ? "" : t.slice(at + 1).trim().toLowerCase();
  if (at <= 0 || !DOMAIN.test(domain) || domain.length > 253) return { query: t, domain: null };
  return { query: t.slice(0, at).trim(), domain };
}

/** The first 20 users listed in the directory whose name starts with, or display name
 * contains, the text; "text@domain" searches another domain's directory (docs/api.md
 * "GET /v1/directory"). `next` is non-null when there are more. */
export async function searchDirectory(api: Api, text: string): Promise<DirectoryPage> {
  const { query, domain } = directoryQuery(text);
  const params = new URLSearchParams({ q: query, limit: "20" });
  if (domain !== null) params.set("domain", domain);
  const d = await api.json<{ users: Array<{ user_id: string; display_name: string | null }>; next_cursor: string | null }>("GET", `/v1/directory?${params}`);
  return { users: d.users.map((u) => ({ userId: u.user_id, displayName: u.display_name })), next: d.next_cursor, domain };
}
