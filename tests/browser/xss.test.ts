/**
 * Issue 4, item 4: the browser side. The Content-Security-Policy (no inline
 * script, connections only to the page's own origin), and a corpus of XSS
 * payloads sent as message text, display names (?name= and the directory) and
 * group names, rendered in the chat, the relay view and the regulator console.
 *
 * The corpus runs in a browser context with CSP *bypassed*: the CSP is tested on
 * its own, and the corpus then proves the pages themselves render every payload
 * as inert text (textContent only), so each defence stands without the other.
 * "No script ran": every payload that could run sets window.__xss, calls alert,
 * logs XSS-MARKER or loads /xss-beacon, and all four are watched. "No element
 * injected": the page bodies hold no script/img/svg/iframe/... element and no
 * on* attribute, before or after, and each payload's text equals what was sent.
 */
import { createServer, type Server } from 'node:http';
import { describe, expect, it } from 'vitest';
import type { BrowserContext, Page } from 'playwright-core';
import { DisplayName, MAX_NAME_CHARS } from '../../shared/protocol.ts';
import { CSP } from '../../server/http.ts';
import { assetPath, user, knows, type TestUser } from '../helpers/relay.ts';
import { browserSuite, openChat } from '../helpers/browser.ts';
import { reportFigures } from '../reliability/support.ts';

const TOKEN = 'test-admin-token';

/** Payloads: markup, handlers, URLs, template syntax, encodings and unicode tricks. */
const PAYLOADS: string[] = [
  '<script>window.__xss=1</script>',
  '<img src=x onerror=window.__xss=1>',
  '<img src=/xss-beacon>',
  '<svg onload=window.__xss=1>',
  '<svg><script>window.__xss=1</script></svg>',
  '<iframe srcdoc="<script>parent.__xss=1</script>">',
  '<iframe src="javascript:parent.__xss=1">',
  '<a href="javascript:window.__xss=1">click me</a>',
  'javascript:window.__xss=1',
  '<body onload=window.__xss=1>',
  '<div style="background:url(/xss-beacon)">x</div>',
  '<div style="width:expression(alert(1))">',
  '<style>@import "/xss-beacon";</style>',
  '<link rel=stylesheet href=/xss-beacon>',
  '<meta http-equiv=refresh content="0;url=/xss-beacon">',
  '<base href="/xss-beacon/">',
  "{{constructor.constructor('alert(1)')()}}",
  // biome-ignore lint/suspicious/noTemplateCurlyInString: a template-injection payload, meant literally
  '${window.__xss=1}',
  '<%= 7*7 %>{{7*7}}#{7*7}',
  '<details open ontoggle=window.__xss=1>',
  '<input autofocus onfocus=window.__xss=1>',
  '<video><source onerror=window.__xss=1>',
  '<math><mtext><table><mglyph><style><img src=x onerror=window.__xss=1>',
  '"><script>window.__xss=1</script>',
  "'><img src=x onerror=window.__xss=1>",
  '</textarea><script>window.__xss=1</script>',
  '<scr<script>ipt>window.__xss=1</script>',
  '\uff1cscript\uff1ewindow.__xss=1\uff1c/script\uff1e',
  '\u202e<img src=x onerror=window.__xss=1>',
  '<img src=x onerror=&#97;lert(1)>',
  '%3Cscript%3Ewindow.__xss=1%3C/script%3E',
  '<object data="javascript:alert(1)">',
  '<embed src=/xss-beacon>',
  '<form action=javascript:alert(1)><button>go',
  '<template><img src=x onerror=alert(1)></template>',
  '<!--<img src="--><img src=x onerror=window.__xss=1>">',
  '<noscript><p title="</noscript><img src=x onerror=alert(1)>">',
  'data:text/html,<script>alert(1)</script>',
  '<svg><animate onbegin=window.__xss=1 attributeName=x dur=1s>',
  '<\u200bscript>console.log("XSS-MARKER")</script>',
  '<img src=x onerror=console.log("XSS-MARKER")>',
  '&lt;script&gt;alert(1)&lt;/script&gt;',
  '<marquee onstart=window.__xss=1>',
];

/** The payloads that are valid display and group names (at most 40 characters, no control characters). */
const NAMES = [...new Set(PAYLOADS.map((p) => DisplayName.safeParse(p)).flatMap((r) => (r.success ? [r.data] : [])))].filter((n) => n.length <= MAX_NAME_CHARS);

/** Count what must never appear in a page body: active elements, inline handlers, script URLs. */
const INJECTED = () => {
  const body = document.body;
  const elements = body.querySelectorAll('script,iframe,frame,object,embed,svg,img,video,audio,source,style,base,meta,math,template,link,marquee,portal').length;
  const all = [...body.querySelectorAll('*')];
  const handlers = all.filter((e) => [...e.attributes].some((a) => /^on/i.test(a.name))).length;
  const urls = all.filter((e) => ['href', 'src', 'action', 'data', 'formaction', 'srcdoc'].some((n) => /^\s*(javascript|vbscript|data):/i.test(e.getAttribute(n) ?? ''))).length;
  return { elements, handlers, urls, xss: (window as unknown as { __xss?: unknown }).__xss ?? null };
};

interface Watch {
  dialogs: number;
  markers: number;
  beacons: number;
}

function watch(page: Page, w: Watch): void {
  page.on('dialog', (d) => {
    w.dialogs += 1;
    void d.dismiss();
  });
  page.on('console', (m) => {
    if (m.text().includes('XSS-MARKER')) w.markers += 1;
  });
  page.on('request', (r) => {
    // The path, not the whole URL: a ?name= navigation carries the payload text in its query string.
    if (new URL(r.url()).pathname.includes('xss-beacon')) w.beacons += 1;
  });
}

const suite = browserSuite();

describe('Content-Security-Policy', () => {
  it('every page is served with a CSP that allows scripts only from the own origin (no inline, no eval) and connections only to the own origin', async () => {
    for (const path of [
      '/',
      '/relay',
      '/regulator',
      '/teacher',
      '/projector',
      '/attacker',
      await assetPath('chat.js'),
      await assetPath('teacher.js'),
      await assetPath('brute-worker.js'),
      '/healthz',
      '/no-such-page',
    ]) {
      const res = await fetch(`${suite.app.url}${path}`);
      expect(res.headers.get('content-security-policy'), path).toBe(CSP);
    }
    const directives = new Map(
      CSP.split(';')
        .map((d) => d.trim().split(/\s+/))
        .map(([name, ...values]) => [name!, values]),
    );
    expect(directives.get('default-src')).toEqual(["'none'"]);
    expect(directives.get('script-src')).toEqual(["'self'", "'wasm-unsafe-eval'"]); // libsodium's WebAssembly, nothing else
    expect(directives.get('connect-src')).toEqual(["'self'"]);
    expect(directives.get('worker-src')).toEqual(["'self'"]); // the attacker console's brute-force worker, from this origin only
    for (const [name, values] of directives) {
      for (const bad of ["'unsafe-inline'", "'unsafe-eval'", '*', 'data:', 'http:', 'https:', 'ws:', 'wss:']) {
        if (name === 'img-src' && bad === 'data:') continue; // images from data: URLs only (no script can come from an image)
        expect(values, `${name} must not allow ${bad}`).not.toContain(bad);
      }
    }
  });

  it('in the page, an injected inline <script>, an inline handler and a data: script are blocked, and no request or socket reaches another origin', async () => {
    // Another origin on this machine, counting every request and upgrade that reaches it.
    let hits = 0;
    const other: Server = createServer((_req, res) => {
      hits += 1;
      res.end('ok');
    });
    other.on('upgrade', (_req, socket) => {
      hits += 1;
      socket.destroy();
    });
    await new Promise<void>((r) => other.listen(0, '127.0.0.1', () => r()));
    const otherPort = (other.address() as { port: number }).port;
    const context: BrowserContext = await suite.browser.newContext();
    try {
      const tab = await openChat(context, suite.app.url, 'CspProbe');
      const page = tab.page;
      const tagResult = await page.addScriptTag({ content: 'window.__inline = 1' }).then(
        () => 'added',
        (err: Error) => (/Content Security Policy/.test(err.message) ? 'refused by the CSP' : `failed: ${err.message.split('\n')[0]}`),
      );
      const outcome = await page.evaluate(async (port) => {
        const img = document.createElement('img');
        img.setAttribute('onerror', 'window.__handler = 1');
        img.src = 'data:,not-an-image';
        document.body.append(img);
        // A script element pointing at a data: URL (script-src has no data:).
        const dataScript = document.createElement('script');
        dataScript.src = 'data:text/javascript,window.__dataScript=1';
        document.body.append(dataScript);
        const fetchOther = await fetch(`http://127.0.0.1:${port}/`).then(
          () => 'reached',
          () => 'blocked',
        );
        const wsOther = await new Promise<string>((resolve) => {
          try {
            const ws = new WebSocket(`ws://127.0.0.1:${port}/`);
            ws.onopen = () => resolve('open');
            ws.onerror = () => resolve('blocked');
          } catch {
            resolve('blocked');
          }
        });
        const fetchSelf = await fetch('/healthz').then((r) => (r.ok ? 'ok' : `status ${r.status}`));
        await new Promise((r) => setTimeout(r, 200));
        const w = window as unknown as Record<string, unknown>;
        img.remove();
        dataScript.remove();
        return { inline: w.__inline ?? null, handler: w.__handler ?? null, dataScript: w.__dataScript ?? null, fetchOther, wsOther, fetchSelf };
      }, otherPort);
      const violations = tab.problems.errors.filter((e) => e.startsWith('csp:'));
      reportFigures('CSP in the browser', {
        'addScriptTag (inline)': tagResult,
        'inline script ran': outcome.inline === null ? 'no' : 'YES',
        'inline handler ran': outcome.handler === null ? 'no' : 'YES',
        'data: script ran': outcome.dataScript === null ? 'no' : 'YES',
        'fetch to another origin': outcome.fetchOther,
        'WebSocket to another origin': outcome.wsOther,
        'requests that reached the other origin': hits,
        'fetch to own origin (control)': outcome.fetchSelf,
        'CSP violations reported': violations.length,
      });
      expect(tagResult).toBe('refused by the CSP');
      expect(outcome.inline).toBeNull();
      expect(outcome.handler).toBeNull();
      expect(outcome.dataScript).toBeNull();
      expect(outcome.fetchOther).toBe('blocked');
      expect(outcome.wsOther).toBe('blocked');
      expect(outcome.fetchSelf).toBe('ok');
      expect(hits).toBe(0);
      expect(violations.some((v) => v.startsWith('csp: script-src'))).toBe(true);
      expect(violations.some((v) => v.startsWith('csp: connect-src'))).toBe(true);
    } finally {
      await context.close();
      await new Promise<void>((r) => other.close(() => r()));
    }
  }, 60_000);
});

describe('XSS corpus', () => {
  it('control: the detectors used below do catch markup that is parsed as HTML (innerHTML in a page without CSP)', async () => {
    const context = await suite.browser.newContext({ bypassCSP: true });
    const w: Watch = { dialogs: 0, markers: 0, beacons: 0 };
    try {
      const page = await context.newPage();
      watch(page, w);
      await page.goto(`${suite.app.url}/relay`);
      const clean = await page.evaluate(INJECTED);
      await page.evaluate(() => {
        const div = document.createElement('div');
        div.innerHTML = '<img src=x onerror="window.__xss=1"><img src=/xss-beacon><img src=x onerror="console.log(\'XSS-MARKER\')">';
        document.body.append(div);
      });
      await page.waitForFunction(() => (window as unknown as { __xss?: unknown }).__xss === 1);
      await page.waitForTimeout(200);
      const dirty = await page.evaluate(INJECTED);
      expect(clean).toEqual({ elements: 0, handlers: 0, urls: 0, xss: null });
      expect(dirty.elements).toBe(3);
      expect(dirty.handlers).toBe(2);
      expect(dirty.xss).toBe(1);
      expect(w.beacons).toBe(1);
      expect(w.markers).toBe(1);
    } finally {
      await context.close();
    }
  });

  it(`${PAYLOADS.length} XSS payloads as message text, display names (?name= and directory) and group names render as inert text in the chat, the relay view and the regulator console: no script runs, no element is injected`, async () => {
    expect(PAYLOADS.length).toBeGreaterThanOrEqual(30);
    expect(NAMES.length).toBeGreaterThanOrEqual(20);
    // The tap is on so that the regulator console opens every message and shows texts and group names too.
    const tap = await fetch(`${suite.app.url}/api/regulator/tap`, {
      method: 'POST',
      headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' },
      body: JSON.stringify({ tap: true, scope: 'all', announced: true }),
    });
    expect(tap.status).toBe(200);

    const context = await suite.browser.newContext({ bypassCSP: true });
    const w: Watch = { dialogs: 0, markers: 0, beacons: 0 };
    const bots: TestUser[] = [];
    try {
      const alice = await openChat(context, suite.app.url, 'Alice');
      watch(alice.page, w);
      const before = await alice.page.evaluate(INJECTED);

      // ---- Display names through the directory: one bot per name payload, each saying hello.
      const mallory = await user(suite.app.wsUrl, 'Mallory');
      const bob = await user(suite.app.wsUrl, 'Bob');
      bots.push(mallory, bob);
      bots.push(...(await Promise.all(NAMES.map((name) => user(suite.app.wsUrl, name)))));
      await Promise.all(bots.map((b) => knows(b, alice.pin)));
      for (const b of bots.slice(2)) b.m.sendText([alice.pin], `hello from bot ${b.m.pin}`);
      // ---- Message text: every payload, 1:1 from Mallory.
      await knows(mallory, bob.m.pin);
      for (const p of PAYLOADS) mallory.m.sendText([alice.pin], p);
      // ---- Group names: one group per name payload, Mallory to Alice and Bob.
      const groups = NAMES.map((name) => ({ id: mallory.m.createGroup(name, [alice.pin, bob.m.pin]).id, name }));
      for (const g of groups) mallory.m.sendGroup(g.id, `in group ${g.id}`);

      // Alice's tab: the contacts and chats, then the 1:1 with Mallory.
      await alice.page.bringToFront();
      const contactNames = async () => alice.page.$$eval('[data-testid="contact"] .name', (els) => els.map((e) => e.textContent ?? ''));
      await alice.page.waitForFunction((n) => document.querySelectorAll('[data-testid="contact"]').length >= n, bots.length, { timeout: 20_000 });
      const chatTitles = () =>
        alice.page.$$eval('[data-testid="chat-item"] .title', (els) =>
          els.map((e) =>
            [...e.childNodes]
              .filter((n) => n.nodeType === Node.TEXT_NODE)
              .map((n) => n.textContent)
              .join(''),
          ),
        );
      await alice.page.waitForFunction((n) => document.querySelectorAll('[data-testid="chat-item"]').length >= n, NAMES.length * 2 + 1, { timeout: 20_000 });
      await alice.page.locator(`[data-testid="contact"][data-pin="${mallory.m.pin}"]`).click();
      await alice.page.waitForFunction((n) => document.querySelectorAll('[data-testid="messages"] [data-testid="message-text"]').length >= n, PAYLOADS.length, { timeout: 20_000 });
      const texts = await alice.page.$$eval('[data-testid="messages"] [data-testid="message-text"]', (els) => els.map((e) => e.textContent ?? ''));
      const names = await contactNames();
      const titles = await chatTitles();
      // Open a few group chats: the conversation title and the sender line render the names too.
      const convTitles: string[] = [];
      for (const g of groups.slice(0, 8)) {
        await alice.page.locator(`[data-testid="chat-item"][data-chat="${g.id}"]`).click();
        convTitles.push((await alice.page.textContent('[data-testid="conv-title"]')) ?? '');
      }
      const afterChat = await alice.page.evaluate(INJECTED);

      // ---- ?name= : one tab renamed through every name payload (each name is a person of its own in localStorage).
      // Four tabs share the names between them, to keep the test short.
      const ownNames: string[] = new Array<string>(NAMES.length).fill('');
      const ownInjected: ReturnType<typeof INJECTED>[] = [];
      await Promise.all(
        [0, 1, 2, 3].map(async (k) => {
          const chameleon = await context.newPage();
          watch(chameleon, w);
          for (let i = k; i < NAMES.length; i += 4) {
            await chameleon.goto(`${suite.app.url}/?name=${encodeURIComponent(NAMES[i]!)}`);
            await chameleon.waitForSelector('body[data-ready="true"]', { timeout: 15_000 });
            ownNames[i] = (await chameleon.textContent('[data-testid="my-name"]')) ?? '';
            ownInjected.push(await chameleon.evaluate(INJECTED));
          }
        }),
      );

      // ---- The relay view (names in the directory and the login log) and the regulator console (texts, group names).
      const view = await context.newPage();
      watch(view, w);
      await view.goto(`${suite.app.url}/relay`);
      await view.waitForFunction((n) => document.querySelectorAll('[data-testid="directory-entry"]').length >= n, bots.length, { timeout: 15_000 });
      const viewText = (await view.textContent('body')) ?? '';
      const viewInjected = await view.evaluate(INJECTED);
      const console = await context.newPage();
      watch(console, w);
      await console.goto(`${suite.app.url}/regulator#token=${TOKEN}`);
      await console.waitForFunction((n) => document.querySelectorAll('[data-testid="intercept-text"]').length >= n, PAYLOADS.length, { timeout: 15_000 });
      const interceptTexts = await console.$$eval('[data-testid="intercept-text"]', (els) => els.map((e) => e.textContent ?? ''));
      const consoleText = (await console.textContent('body')) ?? '';
      const consoleInjected = await console.evaluate(INJECTED);
      await alice.page.waitForTimeout(300); // give anything that would fire late (onload, autofocus, animations) the chance

      const missingTexts = PAYLOADS.filter((p) => !texts.includes(p));
      const missingNames = NAMES.filter((n) => !names.includes(n));
      const missingTitles = NAMES.filter((n) => !titles.includes(n));
      const wrongConvTitles = groups.slice(0, 8).filter((g, i) => convTitles[i] !== g.name).length;
      const wrongOwn = NAMES.filter((n, i) => ownNames[i] !== n);
      const missingInView = NAMES.filter((n) => !viewText.includes(n));
      const missingIntercepts = PAYLOADS.filter((p) => !interceptTexts.includes(p));
      const missingGroupsInConsole = NAMES.filter((n) => !consoleText.includes(`[${n}]`));
      const sum = (xs: ReturnType<typeof INJECTED>[]) => xs.reduce((a, x) => a + x.elements + x.handlers + x.urls + (x.xss === null ? 0 : 1), 0);
      const injected = sum([afterChat, viewInjected, consoleInjected, ...ownInjected]);
      reportFigures('XSS corpus', {
        'payloads tried': PAYLOADS.length,
        'of them valid as names (≤ 40 chars)': NAMES.length,
        'as message text (chat)': `${PAYLOADS.length - missingTexts.length}/${PAYLOADS.length} shown verbatim`,
        'as directory names (chat contacts)': `${NAMES.length - missingNames.length}/${NAMES.length}`,
        'as group names (chat list)': `${NAMES.length - missingTitles.length}/${NAMES.length}`,
        'as ?name= (own name; 4 tabs renamed in turn)': `${NAMES.length - wrongOwn.length}/${NAMES.length}`,
        'in the relay view (names)': `${NAMES.length - missingInView.length}/${NAMES.length}`,
        'in the regulator console (texts / group names)': `${PAYLOADS.length - missingIntercepts.length}/${PAYLOADS.length} / ${NAMES.length - missingGroupsInConsole.length}/${NAMES.length}`,
        'scripts run (window.__xss, dialogs, console markers)': `${[afterChat, viewInjected, consoleInjected, ...ownInjected].filter((x) => x.xss !== null).length}, ${w.dialogs}, ${w.markers}`,
        'beacon requests (an injected img/style/link would fetch)': w.beacons,
        'injected elements, handlers, script URLs in page bodies': injected,
        'CSP during the corpus': 'bypassed (the pages alone must be inert)',
      });
      expect(before).toEqual({ elements: 0, handlers: 0, urls: 0, xss: null });
      expect(missingTexts).toEqual([]);
      expect(missingNames).toEqual([]);
      expect(missingTitles).toEqual([]);
      expect(wrongConvTitles).toBe(0);
      expect(wrongOwn).toEqual([]);
      expect(missingInView).toEqual([]);
      expect(missingIntercepts).toEqual([]);
      expect(missingGroupsInConsole).toEqual([]);
      expect(afterChat).toEqual({ elements: 0, handlers: 0, urls: 0, xss: null });
      expect(viewInjected).toEqual({ elements: 0, handlers: 0, urls: 0, xss: null });
      expect(consoleInjected).toEqual({ elements: 0, handlers: 0, urls: 0, xss: null });
      for (const x of ownInjected) expect(x).toEqual({ elements: 0, handlers: 0, urls: 0, xss: null });
      expect(w).toEqual({ dialogs: 0, markers: 0, beacons: 0 });
    } finally {
      for (const b of bots) b.m.stop();
      await context.close();
    }
  }, 120_000);
});
