"""The management web UI in a real browser (headless Chromium through Selenium): log
in, the overview with its live charts, queues (filter, sort, add), a queue's page
(publish, get, purge, delete), exchanges and bindings, connections (close one),
channels, the cluster's members and the live supervision tree. Also refuses a wrong
password, and works with no network beyond the node (every file comes from it).

Usage: ui.py AMQP_PORT HTTP_PORT [SCREENSHOT_DIR]. Prints "ok" when every check held.
"""

import os
import sys
import threading
import time

import pika
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

AMQP, HTTP = int(sys.argv[1]), int(sys.argv[2])
SHOTS = sys.argv[3] if len(sys.argv) > 3 else None
BASE = f"http://127.0.0.1:{HTTP}/"

options = webdriver.ChromeOptions()
for flag in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000",
             "--disable-gpu", "--no-first-run", "--disable-extensions"]:
    options.add_argument(flag)
options.binary_location = os.environ.get("CHROMIUM", "/usr/bin/chromium")
driver = webdriver.Chrome(service=Service(os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")),
                          options=options)
# The page re-renders while a check reads it: an element replaced under a check is
# read again at the next poll.
wait = WebDriverWait(driver, 20, poll_frequency=0.2,
                     ignored_exceptions=[NoSuchElementException, StaleElementReferenceException])


def by_test(testid, root=None):
    return (root or driver).find_element(By.CSS_SELECTOR, f'[data-testid="{testid}"]')


def all_by_test(testid):
    return driver.find_elements(By.CSS_SELECTOR, f'[data-testid="{testid}"]')


def until(what, check):
    try:
        return wait.until(lambda d: check())
    except Exception as e:
        note = driver.find_element(By.ID, "toast").get_attribute("textContent")
        raise AssertionError(f"never: {what} (last message: {note!r})\n{driver.page_source[:3000]}") from e


def el(testid):
    """The element with `testid`, once the page shows it."""
    return until(f"the element {testid}", lambda: by_test(testid))


def shot(name):
    if SHOTS:
        driver.save_screenshot(os.path.join(SHOTS, f"{name}.png"))


def toast():
    return by_test("toast").text


try:
    # ----- log in ----------------------------------------------------------------
    driver.get(BASE)
    until("the login form", lambda: by_test("login").is_displayed())
    el("login-user").send_keys("guest")
    el("login-password").send_keys("nope")
    el("login-submit").click()
    until("a refused login", lambda: "Login failed" in by_test("login-error").text)
    el("login-password").clear()
    el("login-password").send_keys("guest")
    el("login-submit").click()
    until("logged in", lambda: "guest" in by_test("user-name").text)
    until("the login form gone", lambda: not by_test("login").is_displayed())
    assert by_test("node-name").text, "the node's name in the header"

    # A client that publishes, so the overview has rates to draw.
    stop = threading.Event()
    closed_by = []

    def traffic():
        conn = pika.BlockingConnection(pika.ConnectionParameters(
            port=AMQP, client_properties={"connection_name": "ui-traffic"}))
        ch = conn.channel()
        ch.queue_declare("traffic", durable=True)
        ch.confirm_delivery()
        ch.basic_consume("traffic", lambda c, m, p, b: c.basic_ack(m.delivery_tag))
        try:
            while not stop.is_set():
                ch.basic_publish("", "traffic", b"x" * 100)
                conn.process_data_events(time_limit=0.01)
        except pika.exceptions.ConnectionClosedByBroker as e:
            closed_by.append((e.reply_code, e.reply_text))

    threading.Thread(target=traffic, daemon=True).start()

    # ----- overview: totals and live charts --------------------------------------
    until("the totals", lambda: by_test("total-queues").text.split("\n")[0] not in ("", "0"))
    until("two uPlot charts", lambda: len(driver.find_elements(By.CSS_SELECTOR, ".uplot canvas")) >= 2)
    until("a publish rate", lambda: by_test("total-publish").text.split("\n")[0] not in ("", "0.0/s"))
    listeners = by_test("listeners").text
    assert "amqp" in listeners and str(HTTP) in listeners, listeners
    time.sleep(3)  # a few seconds of chart for the screenshot
    shot("overview")

    # ----- queues: add, filter, sort ---------------------------------------------
    driver.get(BASE + "#/queues")
    until("the queue table", lambda: by_test("queues"))
    for name in ["ui-orders", "ui-audit", "other"]:
        el("add-queue-name").clear()
        el("add-queue-name").send_keys(name)
        el("add-queue-submit").click()
        until(f"queue {name} added", lambda: name in by_test("queues").text)
    el("queue-filter").send_keys("ui-")
    until("filtered to ui-*", lambda: "other" not in by_test("queues").text and "ui-orders" in by_test("queues").text)
    assert "2 of" in by_test("queue-count").text, by_test("queue-count").text
    names = lambda: [a.text for a in all_by_test("queue-link")]
    until("sorted by name", lambda: names() == ["ui-audit", "ui-orders"])
    driver.find_element(By.CSS_SELECTOR, 'th[data-sort="name"]').click()
    until("sorted by name, reversed", lambda: names() == ["ui-orders", "ui-audit"])
    shot("queues")

    # ----- a queue's page: publish, get, purge, delete ---------------------------
    [a for a in all_by_test("queue-link") if a.text == "ui-orders"][0].click()
    until("the queue's page", lambda: by_test("queue-name").text == "ui-orders")
    for payload in ["hello from the browser", "second"]:
        el("publish-payload").clear()
        el("publish-payload").send_keys(payload)
        el("publish-submit").click()
        until("published", lambda: "published" in toast())
    until("2 messages", lambda: by_test("queue-props").get_attribute("data-messages") == "2")
    Select(el("get-ackmode")).select_by_value("ack_requeue_true")
    el("get-submit").click()
    until("the message shown", lambda: "hello from the browser" in by_test("got").text)
    el("purge").click()
    until("purged", lambda: by_test("queue-props").get_attribute("data-messages") == "0")
    el("get-submit").click()
    until("empty", lambda: all_by_test("queue-empty"))
    el("delete-queue").click()
    driver.switch_to.alert.accept()
    until("back on the queue list", lambda: driver.current_url.endswith("#/queues"))
    until("ui-orders gone", lambda: "ui-orders" not in by_test("queues").text)

    # ----- exchanges and bindings --------------------------------------------------
    driver.get(BASE + "#/exchanges")
    el("add-exchange-name").send_keys("ui-events")
    Select(el("add-exchange-type")).select_by_visible_text("topic")
    el("add-exchange-submit").click()
    until("ui-events listed", lambda: "ui-events" in by_test("exchanges").text)
    [a for a in all_by_test("exchange-link") if a.text == "ui-events"][0].click()
    until("the exchange's page", lambda: by_test("exchange-name").text == "ui-events")
    el("bind-destination").send_keys("ui-audit")
    el("bind-key").send_keys("audit.#")
    el("bind-submit").click()
    until("the binding listed", lambda: "audit.#" in by_test("exchange-bindings").text)
    el("delete-exchange").click()
    driver.switch_to.alert.accept()
    until("ui-events gone", lambda: driver.current_url.endswith("#/exchanges") and "ui-events" not in by_test("exchanges").text)

    # ----- connections and channels -------------------------------------------------
    driver.get(BASE + "#/channels")
    until("the traffic channel", lambda: "confirm" in by_test("channels").text)
    driver.get(BASE + "#/connections")
    until("the traffic connection", lambda: "ui-traffic" in by_test("connections").text)
    shot("connections")
    el("close-connection").click()
    until("no connections", lambda: "No connections." in by_test("connections").text)
    until("the client told why", lambda: closed_by == [(320, "CONNECTION_FORCED - Closed via the Warren management UI")])
    stop.set()

    # ----- cluster and the live tree ------------------------------------------------
    driver.get(BASE + "#/cluster")
    until("this node leads", lambda: by_test("leader").text == by_test("node-name").text)
    assert "up" in by_test("members").text
    driver.get(BASE + "#/tree")
    until("the tree", lambda: "node" in [n.text for n in all_by_test("tree-node")])
    nodes = [n.text for n in all_by_test("tree-node")]
    assert "http" in nodes and "queues:/" in nodes and "queue:/ui-audit" in nodes, nodes
    shot("tree")
    # Live: a queue declared now appears without reloading the page.
    conn = pika.BlockingConnection(pika.ConnectionParameters(port=AMQP))
    conn.channel().queue_declare("appears-live", durable=True)
    conn.close()
    until("the new queue's actor", lambda: "queue:/appears-live" in [n.text for n in all_by_test("tree-node")])

    # Every file the page loaded came from the node.
    sources = driver.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)")
    foreign = [s for s in sources if not s.startswith(BASE)]
    assert not foreign, foreign

    el("logout").click()
    until("logged out", lambda: by_test("login").is_displayed())

    # A user with the management tag only: their own overview, without the node's
    # rates or listeners, and no error.
    import base64, json, urllib.request  # noqa: E401,E402

    def admin(method, path, body):
        req = urllib.request.Request(f"{BASE}api{path}", data=json.dumps(body).encode(), method=method)
        req.add_header("Authorization", "Basic " + base64.b64encode(b"guest:guest").decode())
        req.add_header("Content-Type", "application/json")
        urllib.request.urlopen(req, timeout=20).read()

    admin("PUT", "/users/viewer", {"password": "pw", "tags": "management"})
    admin("PUT", "/permissions/%2F/viewer", {"configure": "", "write": "", "read": ".*"})
    el("login-user").clear()
    el("login-user").send_keys("viewer")
    el("login-password").clear()
    el("login-password").send_keys("pw")
    el("login-submit").click()
    until("logged in as the viewer", lambda: "viewer" in by_test("user-name").text)
    # The tree (where the admin left off) is for monitoring users: it says so.
    until("the tree refused", lambda: "monitoring" in by_test("view-error").text)
    driver.get(BASE + "#/")
    until("the viewer's overview", lambda: by_test("total-queues").text.split("\n")[0] not in ("", "0"))
    assert not all_by_test("view-error"), by_test("view-error").text
    until("no listeners for a viewer", lambda: "Shown to monitoring users." in by_test("listeners").text)
    el("logout").click()
    until("logged out again", lambda: by_test("login").is_displayed())
    print("ok")
finally:
    driver.quit()
