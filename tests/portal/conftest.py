"""The portal in a real browser: Debian's chromium driven by Playwright, against the running stack (every
service, the portal under gunicorn, the nginx ingress, Keycloak), started here when it is not running and
loaded with the demo data. One browser for the session; one signed-in context per demo user, so each
person signs in at Keycloak once, as a person does.

Every page a test visits is checked with axe-core in the same browser (no serious or critical
violation) and must raise no Content-Security-Policy violation."""
import json
import os
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from playwright.sync_api import expect, sync_playwright

ROOT = Path(__file__).resolve().parents[2]
AXE = ROOT / "services/portal/node_modules/axe-core/axe.min.js"
# A test run writes its screenshots under var/; `IPV_SCREENSHOTS=docs/screenshots make test` refreshes the
# README's (a run never changes committed files on its own).
SCREENSHOTS = ROOT / os.environ.get("IPV_SCREENSHOTS", "var/screenshots")
PHONE = {"width": 375, "height": 740}
DESKTOP = {"width": 1280, "height": 860}
CHROMIUM = os.environ.get("IPV_CHROMIUM", "/usr/bin/chromium")


def portal_url():
    return f"http://127.0.0.1:{os.environ.get('PORT', '8000')}"


def answers(url):
    try:
        with urllib.request.urlopen(url, timeout=3) as response:
            return response.status == 200
    except OSError:
        return False


@pytest.fixture(scope="session")
def base_url():
    """The stack's ingress; the services, the portal and the demo data are started when absent and
    stopped again at the end if this session started them."""
    url = portal_url()
    started = False
    if not answers(url + "/healthz"):
        subprocess.run(["bash", "scripts/services.sh", "start"], cwd=ROOT, check=True, timeout=300)
        started = True
    subprocess.run([str(ROOT / ".venv/bin/python"), "-W", "ignore", "-m", "scripts.demo", url], cwd=ROOT, check=True,
                   timeout=300, stdout=subprocess.DEVNULL)
    yield url
    if started:
        subprocess.run(["bash", "scripts/services.sh", "stop"], cwd=ROOT, timeout=120)


@pytest.fixture(scope="session")
def browser():
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser
        browser.close()


class Visitor:
    """One person's browser context: visits pages, checks each with axe-core and for CSP violations."""

    def __init__(self, context, base_url):
        self.context, self.base_url = context, base_url
        self.page = context.new_page()
        self.csp_violations = []
        self.page.on("console", lambda m: "Content Security Policy" in m.text and self.csp_violations.append(m.text))

    def goto(self, path):
        self.page.goto(self.base_url + path)
        self.check()
        return self.page

    def check(self):
        """No serious or critical accessibility violation, no blocked inline code, on the page shown now."""
        page = self.page
        page.wait_for_load_state("load")
        # page.evaluate runs through the DevTools protocol, which the page's CSP does not govern.
        if not page.evaluate("typeof window.axe !== 'undefined'"):
            page.evaluate(AXE.read_text() + "\n;0")
        result = page.evaluate("axe.run(document, {resultTypes: ['violations']})")
        bad = [(v["id"], v["impact"], [n["target"] for n in v["nodes"]][:3]) for v in result["violations"]
               if v["impact"] in ("serious", "critical")]
        assert not bad, f"{page.url}: {bad}"
        assert not self.csp_violations, f"{page.url}: {self.csp_violations}"

    def heading(self):
        return self.page.get_by_role("heading", level=1).inner_text()

    def text(self):
        return self.page.locator("main").inner_text()

    def screenshot(self, name):
        """Desktop and phone width (the README shows some: see SCREENSHOTS)."""
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page = self.page
        page.set_viewport_size(DESKTOP)
        page.screenshot(path=SCREENSHOTS / f"{name}-desktop.png")
        page.set_viewport_size(PHONE)
        page.screenshot(path=SCREENSHOTS / f"{name}-phone.png")
        # nothing sticks out sideways at 375 px: the page is usable on a phone
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= PHONE["width"], f"{page.url} is {width}px wide at {PHONE['width']}px"
        page.set_viewport_size(DESKTOP)


@pytest.fixture(scope="session")
def visitor(browser, base_url):
    context = browser.new_context(viewport=DESKTOP, locale="zh-CN")
    yield Visitor(context, base_url)
    context.close()


def demo_user(role):
    from scripts.keycloak import demo_users
    (user,) = [u for u in demo_users() if u[1] == role]
    return user


def sign_in(visitor, role):
    """Through the portal's sign-in page and Keycloak's login form, with a TOTP code for staff."""
    from scripts.keycloak import totp
    username, _, org, password, otp_secret = demo_user(role)
    page = visitor.goto("/sign-in")
    page.get_by_role("link", name="继续登录").click()
    page.locator("#username").fill(username)
    page.locator("#password").fill(password)
    page.locator("#kc-login").click()
    if otp_secret:
        for _ in range(3):
            page.locator("#otp").fill(totp(otp_secret).now())
            page.locator("#kc-login").click()
            page.wait_for_load_state("load")
            if page.url.startswith(visitor.base_url):
                break
            # a code this user already spent in this 30 s window (another test signed in): wait for the next
            time.sleep(31 - time.time() % 30)
    page.wait_for_url(visitor.base_url + "/**")
    visitor.check()
    expect(page.get_by_text(f"已登录：{username}")).to_be_visible()
    return visitor


@pytest.fixture(scope="session")
def people(browser, base_url):
    """Signed-in visitors by role, made on first use and kept for the session."""
    made = {}

    def person(role):
        if role not in made:
            made[role] = sign_in(Visitor(browser.new_context(viewport=DESKTOP, locale="zh-CN"), base_url), role)
        return made[role]
    yield person
    for visitor in made.values():
        visitor.context.close()


def api_json(base_url, path, token, method="GET", body=None):
    request = urllib.request.Request(base_url + path, method=method, data=json.dumps(body).encode() if body else None,
                                     headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)
