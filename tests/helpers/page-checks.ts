/**
 * Checks measured in the page itself: the WCAG contrast of every piece of text drawn, and the
 * smallest font size, for the phone, projector and layout tests.
 */
import type { Page } from 'playwright-core';

export interface ContrastFailure {
  text: string;
  color: string;
  background: string;
  ratio: number;
  px: number;
  need: number;
}

/**
 * Every visible text node under `root` whose colour against its background is below WCAG AA:
 * 4.5:1, or 3:1 for large text (24 px, or 18.66 px bold). The background is the first opaque
 * background colour up the tree (semi-transparent layers blended on the way); disabled controls
 * are exempt, as WCAG exempts inactive components.
 */
export function contrastFailures(page: Page, root = 'body'): Promise<ContrastFailure[]> {
  return page.evaluate((rootSelector) => {
    const parse = (c: string): number[] | null => {
      const m = /rgba?\(([^)]+)\)/.exec(c);
      if (!m) return null;
      const parts = m[1]!
        .split(/[\s,/]+/)
        .filter(Boolean)
        .map(Number);
      return [parts[0]!, parts[1]!, parts[2]!, parts[3] ?? 1];
    };
    const channel = (v: number) => {
      const s = v / 255;
      return s <= 0.03928 ? s / 12.92 : ((s + 0.055) / 1.055) ** 2.4;
    };
    const lum = (c: number[]) => 0.2126 * channel(c[0]!) + 0.7152 * channel(c[1]!) + 0.0722 * channel(c[2]!);
    const blend = (top: number[], bottom: number[]) => [0, 1, 2].map((i) => top[i]! * top[3]! + bottom[i]! * (1 - top[3]!)).concat(1);
    // Memoized up the tree: each element's style is read once, however many text nodes it holds.
    const bgMemo = new Map<Element, number[]>();
    const backgroundOf = (e: Element): number[] => {
      const known = bgMemo.get(e);
      if (known) return known;
      const c = parse(getComputedStyle(e).backgroundColor);
      const below = c && c[3]! >= 1 ? [255, 255, 255, 1] : e.parentElement ? backgroundOf(e.parentElement) : [255, 255, 255, 1];
      const bg = c && c[3]! > 0 ? blend(c, below) : below;
      bgMemo.set(e, bg);
      return bg;
    };
    const fadeMemo = new Map<Element, boolean>();
    const fadedOf = (e: Element): boolean => {
      const known = fadeMemo.get(e);
      if (known !== undefined) return known;
      const faded = Number(getComputedStyle(e).opacity) < 1 || (e.parentElement ? fadedOf(e.parentElement) : false);
      fadeMemo.set(e, faded);
      return faded;
    };
    const out: { text: string; color: string; background: string; ratio: number; px: number; need: number }[] = [];
    const root = document.querySelector(rootSelector);
    if (!root) return out;
    const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT);
    for (let node = walker.nextNode(); node; node = walker.nextNode()) {
      const el = node.parentElement;
      if (!el || !node.textContent?.trim() || !el.getClientRects().length) continue;
      const style = getComputedStyle(el);
      if (style.visibility !== 'visible' || el.closest(':disabled, [aria-disabled="true"], option')) continue;
      if (fadedOf(el)) continue;
      const bg = backgroundOf(el);
      const fgRaw = parse(style.color);
      if (!fgRaw) continue;
      const fg = fgRaw[3]! < 1 ? blend(fgRaw, bg) : fgRaw;
      const [a, b] = [lum(fg), lum(bg)].sort((x, y) => y - x);
      const ratio = (a! + 0.05) / (b! + 0.05);
      const px = Number.parseFloat(style.fontSize);
      const large = px >= 24 || (Number(style.fontWeight) >= 700 && px >= 18.66);
      const need = large ? 3 : 4.5;
      if (ratio < need - 0.005)
        out.push({
          text: node.textContent.trim().slice(0, 40),
          color: style.color,
          background: `rgb(${bg.slice(0, 3).map(Math.round).join(', ')})`,
          ratio: Math.round(ratio * 100) / 100,
          px,
          need,
        });
    }
    return out;
  }, root);
}

/** The drawn text under `root` smaller than `px`, with its size. */
export function textUnder(page: Page, px: number, root = 'body'): Promise<{ text: string; px: number }[]> {
  return page.evaluate(
    ([rootSelector, min]) => {
      const out: { text: string; px: number }[] = [];
      const root = document.querySelector(rootSelector as string);
      if (!root) return out;
      const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT);
      for (let node = walker.nextNode(); node; node = walker.nextNode()) {
        const el = node.parentElement;
        if (!el || !node.textContent?.trim() || !el.getClientRects().length) continue;
        const size = Number.parseFloat(getComputedStyle(el).fontSize);
        if (size < (min as number)) out.push({ text: node.textContent.trim().slice(0, 40), px: size });
      }
      return out;
    },
    [root, px] as const,
  );
}

/** True when the page scrolls sideways (its content is wider than the viewport). */
export const scrollsSideways = (page: Page): Promise<boolean> => page.evaluate(() => document.documentElement.scrollWidth > innerWidth + 1);
