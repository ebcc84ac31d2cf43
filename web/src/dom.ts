// Small DOM helpers shared by the page's views. Text from the network goes in as text only.
import { ApiError } from "./api.js";

export const $ = <T extends HTMLElement>(id: string): T => {
  const el = document.getElementById(id);
  if (el === null) throw new Error(`missing #${id}`);
  return el as T;
};

export function el<K extends keyof HTMLElementTagNameMap>(tag: K, text?: string, cls?: string): HTMLElementTagNameMap[K] {
  const e = document.createElement(tag);
  if (text !== undefined) e.textContent = text;
  if (cls !== undefined) e.className = cls;
  return e;
}

export const errorText = (e: unknown): string => (e instanceof ApiError || e instanceof Error ? e.message : String(e));
