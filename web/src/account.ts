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
}

/** The first 20 users listed in the directory whose name starts with, or display name
 * contains, `query`; `next` is non-null when there are more. */
export async function searchDirectory(api: Api, query: string): Promise<DirectoryPage> {
  const params = new URLSearchParams({ q: query.trim(), limit: "20" });
  const d = await api.json<{ users: Array<{ user_id: string; display_name: string | null }>; next_cursor: string | null }>("GET", `/v1/directory?${params}`);
  return { users: d.users.map((u) => ({ userId: u.user_id, displayName: u.display_name })), next: d.next_cursor };
}
