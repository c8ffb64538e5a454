"""The page in headless Chromium (Debian's, through Playwright): generate, compare, invalid input,
history, admin. Each test saves a screenshot of its tab to docs/screenshots/."""
from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from tests.ui.conftest import ADMIN_PASSWORD, ROOT, screenshot

pytestmark = pytest.mark.timeout(300)

PLAYING = """(sel) => { const vs = [...document.querySelectorAll(sel)];
  return vs.length > 0 && vs.every(v => v.readyState >= 2 && !v.paused && v.currentTime > 0 && !v.error); }"""


def open_page(page, studio, query: str = ""):
    page.goto(f"{studio.url}/{query}")
    page.wait_for_selector("#prompt textarea", state="attached")
    page.wait_for_function("() => document.querySelector('#model input') && document.querySelector('#model input').value")
    page.wait_for_function("() => document.body.dataset.pwLoaded === '1'")  # the load event has landed


def settle(page):
    """Wait until no event shows as pending: Gradio ignores a click on a button whose previous
    event has not finished (trigger_mode "once"), as a person waits for the page to settle."""
    page.wait_for_function("() => !document.querySelector('.pending')")


def seen_statuses(page, until: str, timeout: float = 120_000) -> list[str]:
    """Statuses shown by the progress card until ``until`` shows (polled from the DOM)."""
    return page.evaluate(
        """async ([until, timeout]) => {
          const seen = []; const t0 = Date.now();
          while (Date.now() - t0 < timeout) {
            for (const el of document.querySelectorAll('#gen-progress .pw-progress')) {
              const s = el.dataset.status + (el.querySelector('.pw-progress-detail') || {}).textContent;
              if (!seen.includes(s)) seen.push(s);
            }
            if (document.querySelector(until)) return seen;
            await new Promise(r => setTimeout(r, 50));
          }
          return seen;
        }""", [until, timeout])


def test_generate_shows_progress_then_a_playing_video(page, studio):
    open_page(page, studio)
    page.fill("#prompt textarea", "a red circle moves to the right")
    before = studio.run_count()
    page.click("#generate-btn")
    page.wait_for_selector("#gen-progress .pw-progress")
    assert re.search(r"Queued run #\d+, seed \d+", page.inner_text("#gen-message"))
    statuses = seen_statuses(page, "#gen-videos video")
    assert any(s.startswith(("queued", "running")) for s in statuses), statuses
    # the VAE decode (seconds on a CPU) is a phase of its own, with time left, not "100% · 0.0 s left"
    assert any(s.startswith("running") and "decoding…" in s and "left" in s for s in statuses), statuses
    assert studio.run_count() == before + 1
    page.wait_for_function(PLAYING, arg="#gen-videos video")
    assert page.locator("#gen-progress [data-status=done]").count() == 1
    page.wait_for_selector("#gen-preview video")  # the lowest stage's preview (pyramidal)
    card = page.inner_text("#gen-card")
    assert "TFLOPs" in card and "stage 3" in card and "seed" in card
    screenshot(page, "generate")


def test_fast_decode_reaches_the_worker_and_the_report(page, studio):
    open_page(page, studio)
    page.fill("#prompt textarea", "a blue square moves up")
    page.check("#fast-decode input[type=checkbox]")
    page.click("#generate-btn")
    page.wait_for_selector("#gen-progress .pw-progress")
    run_id = int(re.search(r"Queued run #(\d+)", page.inner_text("#gen-message")).group(1))
    page.wait_for_function(PLAYING, arg="#gen-videos video", timeout=180_000)
    assert "decoded with the tiny decoder" in page.inner_text("#gen-card")
    row = studio.http.get(f"/api/runs/{run_id}").json()
    assert row["status"] == "done" and row["decoder"] == row["report"]["decoder"] == "tiny"
    assert row["report"]["preview_decoder"] == "tiny" and row["report"]["seconds"]["decode"] > 0
    page.uncheck("#fast-decode input[type=checkbox]")
    screenshot(page, "generate-fast-decode")


def test_compare_with_the_original_shows_both_videos_and_the_table(page, studio):
    open_page(page, studio)
    page.fill("#prompt textarea", "a green ball bounces")
    page.click("#compare-btn")
    page.wait_for_selector("#gen-progress .pw-progress >> nth=1")
    assert "the pyramid" in page.inner_text("#gen-message")
    page.wait_for_function(PLAYING, arg="#gen-videos video", timeout=180_000)
    assert page.locator("#gen-videos video").count() == 2
    assert "Speed-up against the original" in page.inner_text("#gen-card")
    page.click("#open-compare")
    page.wait_for_selector("#cmp-videos video >> nth=1")
    page.wait_for_function(PLAYING, arg="#cmp-videos video")
    page.wait_for_selector("#cmp-quality :text('PSNR')")
    table = page.inner_text("#cmp-table")
    for row in ("denoise (s)", "stage 3 (s)", "TFLOPs", "peak memory (MB)"):
        assert row in table
    assert "SSIM" in page.inner_text("#cmp-quality")
    # the two videos play in step
    drift = page.evaluate("() => { const [a, b] = document.querySelectorAll('#cmp-videos video'); return Math.abs(a.currentTime - b.currentTime); }")
    assert drift < 0.5
    page.click("#cmp-sbs")
    page.wait_for_selector("#cmp-file a")
    screenshot(page, "compare")


def test_a_comparison_opens_directly_from_its_link(page, studio, done_comparison):
    group, _ = done_comparison
    open_page(page, studio, f"?comparison={group['id']}")
    expect(page.get_by_role("tab", name="Compare")).to_have_attribute("aria-selected", "true")
    page.click("#cmp-go")
    page.wait_for_selector("#cmp-videos video >> nth=1")


def test_invalid_input_shows_a_message_and_queues_nothing(page, studio):
    open_page(page, studio)
    before = studio.run_count()
    page.click("#generate-btn")  # empty prompt
    page.wait_for_selector("#gen-message :text('prompt is empty')")
    page.fill("#prompt textarea", "a red circle")
    page.get_by_text("More settings").click()
    # the page fills the box with the model's recommendation once loaded: type after that, not before
    page.wait_for_function("() => { const e = document.querySelector('#guidance textarea, #guidance input');"
                           " return e && e.value.trim() !== ''; }")
    page.fill("#guidance textarea, #guidance input", "50")
    settle(page)
    page.click("#generate-btn")
    page.wait_for_selector("#gen-message :text('out of range')")
    page.fill("#guidance textarea, #guidance input", "5")
    page.fill("#schedule input", "2-0-1")
    page.keyboard.press("Enter")
    page.wait_for_selector("#gen-message :text('nearest valid: 2-1-1')")
    settle(page)
    page.click("#generate-btn")
    page.wait_for_selector("#gen-message :text('nearest valid')")
    assert studio.run_count() == before
    screenshot(page, "invalid-input")


def test_what_is_typed_before_the_page_has_loaded_is_kept(page, studio):
    """The load event lands after the user has typed (held here until they have): it refreshes the
    model list but leaves the model and guidance boxes as typed."""
    held = []
    page.route("**/gradio_api/queue/join*", lambda route: held.append(route))
    page.goto(studio.url)
    page.get_by_text("More settings").click()
    page.wait_for_selector("#guidance textarea, #guidance input")
    page.fill("#guidance textarea, #guidance input", "7, 5, 3")
    while not held:
        page.wait_for_timeout(50)
    for route in held:
        route.continue_()
    page.unroute("**/gradio_api/queue/join*")
    page.wait_for_function("() => document.body.dataset.pwLoaded === '1'")
    assert page.input_value("#guidance textarea, #guidance input") == "7, 5, 3"
    assert page.input_value("#model input")


def test_history_lists_runs_and_opens_one(page, studio, done_comparison):
    _, (original, pyramid) = done_comparison
    open_page(page, studio)
    page.get_by_role("tab", name="History").click()
    page.wait_for_function("(p) => document.querySelector('#h-table').innerText.includes(p)", arg=pyramid["prompt"])
    # a small still of each finished run beside its row, loaded from /api/runs/{id}/still
    page.wait_for_function("(id) => { const img = document.querySelector(`#h-table img[src^='/api/runs/${id}/still']`);"
                           " return img && img.complete && img.naturalWidth > 0; }", arg=pyramid["id"])
    page.fill("#h-id input", str(pyramid["id"]))
    page.click("#h-open")
    page.wait_for_function(PLAYING, arg="#h-videos video")
    assert "Speed-up against the original" in page.inner_text("#h-card")
    page.click("#h-delete")  # not unlocked: refused
    page.wait_for_selector(".toast-body :text('admin password'), #h-message :text('admin password')")
    assert studio.http.get(f"/api/runs/{pyramid['id']}").status_code == 200
    screenshot(page, "history")


def test_admin_refuses_a_wrong_password_and_accepts_the_right_one(page, studio):
    open_page(page, studio)
    page.get_by_role("tab", name="Admin").click()
    page.fill("#admin-password input", "not-the-password")
    page.click("#admin-unlock")
    page.wait_for_selector("#admin-message :text('Wrong admin password')")
    assert not page.locator("#admin-panel").is_visible()
    page.fill("#admin-password input", ADMIN_PASSWORD)
    page.click("#admin-unlock")
    page.wait_for_selector("#admin-message :text('Admin unlocked')")
    page.wait_for_selector("#admin-panel #ckpt-table")
    assert page.locator("#admin-panel").is_visible()

    # start a (4-step) finetune job, follow it to its loss curve and its checkpoint
    page.get_by_text("Start a finetune job").click()
    page.fill("#job-name input, #job-name textarea", "browser-tuned")
    page.click("#job-base input")
    page.get_by_role("option", name="tiny").click()
    page.fill("#job-config .cm-content", '{"data": "world:4", "steps": 4, "schedule": "2-2-1"}')
    job_id = start_and_follow_job(page)
    page.click("#job-refresh")
    page.wait_for_function("() => document.querySelector('#ckpt-table').innerText.includes('browser-tuned')")
    job = studio.http.get(f"/api/admin/jobs/{job_id}", headers={"Authorization": f"Bearer {ADMIN_PASSWORD}"}).json()
    assert job["status"] == "done" and len(job["losses"]) == 4 and job["checkpoint_id"]
    page.evaluate("() => document.querySelector('#jobs-table').scrollIntoView()")
    screenshot(page, "admin")


def test_dark_mode(page, studio):
    open_page(page, studio, "?__theme=dark")
    assert page.evaluate("() => document.body.classList.contains('dark') || document.documentElement.classList.contains('dark')")
    screenshot(page, "generate-dark")


def test_a_model_that_cannot_load_shows_a_message_not_a_traceback(page, studio):
    r = studio.http.post("/api/runs", json={"prompt": "a red circle", "model": "wan2.1-1.3b", "schedule": "2-2-1",
                                            "seed": 1, "frames": 17, "height": 128, "width": 128})
    assert r.status_code == 201, r.text
    row = studio.wait_run(r.json()["id"])
    assert row["status"] == "failed" and "could not be loaded" in row["error"]
    open_page(page, studio, f"?run={row['id']}")
    expect(page.get_by_role("tab", name="History")).to_have_attribute("aria-selected", "true")
    expect(page.locator("#h-id input")).to_have_value(str(row["id"]))
    page.click("#h-open")
    page.wait_for_selector("#h-videos [data-status=failed]")
    text = page.inner_text("#h-card") + page.inner_text("#h-videos")
    assert "could not be loaded" in text and "PWAN_WAN_PATH" in text and "Traceback" not in text


def test_a_running_run_can_be_cancelled_from_the_page(page, studio):
    open_page(page, studio)
    page.fill("#prompt textarea", "a slow purple star spins")
    # Long enough that it cannot finish before the cancel lands: the tiny model does
    # 100-100-100 at 17 x 128 x 128 in half a second; this plan at this size takes about a minute.
    page.fill("#schedule input", "200-200-200")
    page.keyboard.press("Enter")
    settle(page)  # the schedule's sizes have landed: they would otherwise reset the size typed next
    page.fill("#size input", "49 x 384 x 384")
    page.keyboard.press("Enter")
    page.click("#generate-btn")
    page.wait_for_selector("#gen-progress [data-status=running]", timeout=60_000)
    page.click("#gen-cancel")
    page.wait_for_selector("#gen-progress [data-status=cancelled]", timeout=60_000)
    assert not page.locator("#gen-cancel").is_visible()


def test_history_cancels_only_this_sessions_runs_unless_admin(page, bare_studio):
    """Cancel tokens in the page: a run queued by someone else needs the admin password; the
    page's own run (its token kept in the browser session) is cancelled without one."""
    studio = bare_studio  # no worker: runs stay queued
    theirs = studio.http.post("/api/runs", json={"prompt": "someone else's run", "seed": 1, "model": "tiny",
                                                 "schedule": "2-2-1", "frames": 17, "height": 128, "width": 128}).json()
    open_page(page, studio)
    page.fill("#prompt textarea", "my own queued run")
    page.click("#generate-btn")
    page.wait_for_selector("#gen-message :text('Queued run')")
    mine = int(re.search(r"run #(\d+)", page.inner_text("#gen-message")).group(1))
    settle(page)

    page.get_by_role("tab", name="History").click()
    page.fill("#h-id input", str(theirs["id"]))
    page.click("#h-cancel")
    page.wait_for_selector("#h-message :text('admin password')")
    assert studio.http.get(f"/api/runs/{theirs['id']}").json()["status"] == "queued"
    settle(page)
    page.fill("#h-id input", str(mine))
    page.click("#h-cancel")
    page.wait_for_selector(f"#h-message :text('Run #{mine} cancelled')")
    assert studio.http.get(f"/api/runs/{mine}").json()["status"] == "cancelled"

    page.get_by_role("tab", name="Admin").click()
    page.fill("#admin-password input", ADMIN_PASSWORD)
    page.click("#admin-unlock")
    page.wait_for_selector("#admin-message :text('Admin unlocked')")
    page.get_by_role("tab", name="History").click()
    page.fill("#h-id input", str(theirs["id"]))
    page.click("#h-cancel")
    page.wait_for_selector(f"#h-message :text('Run #{theirs['id']} cancelled')")
    assert studio.http.get(f"/api/runs/{theirs['id']}").json()["status"] == "cancelled"


def start_and_follow_job(page) -> int:
    """Start the admin form's job, follow it until it is done and its loss plot is drawn; its id."""
    page.click("#job-start")
    page.wait_for_selector("#job-detail :text('Queued job #')")
    job_id = int(re.search(r"Queued job #(\d+)", page.inner_text("#job-detail")).group(1))
    page.fill("#job-id input", str(job_id))
    page.click("#job-follow")
    page.wait_for_selector("#job-detail .pw-done", timeout=180_000)
    page.wait_for_selector("#job-loss canvas, #job-loss svg")
    return job_id


# ---------------------------------------------------------------------------- distilled students
@pytest.fixture(params=["tiny stand-in", "mini-distilled"])
def distilled(request, studio):
    """A distilled checkpoint in the model list: (its label there, its name, its recipe's schedule).

    ``mini-distilled``: the shipped student (``models/mini-distilled``, registered at start-up);
    ``tiny stand-in``: the tiny model's random weights under a distilled card (a 2-2-1 recipe),
    registered through the admin API, so the page's handling of students is covered without it."""
    import json

    if request.param == "mini-distilled":
        card_file = ROOT / "models" / "mini-distilled" / "card.json"
        assert card_file.is_file(), "models/mini-distilled is shipped (python -m finetune.mini_world --distill-only)"
        card = json.loads(card_file.read_text())
        return f"mini-distilled — {card['label']}", "mini-distilled", card["recipe"]["schedule"]
    from core.checkpoints import save_checkpoint
    from core.presets import build_components
    from tests.service.conftest import distilled_card

    name = "tiny-standin"
    admin = {"Authorization": f"Bearer {ADMIN_PASSWORD}"}
    if name not in [c["name"] for c in studio.http.get("/api/admin/checkpoints", headers=admin).json()]:
        folder = studio.data_dir / "uploads" / name
        save_checkpoint(folder, build_components("tiny", "cpu").transformer, distilled_card(name=name))
        r = studio.http.post("/api/admin/checkpoints", headers=admin,
                             json={"path": str(folder), "base": "tiny", "name": name})
        assert r.status_code == 201, r.text
    return f"{name} — 2-2-1, 5 steps, guidance baked in, DMD-PT*", name, "2-2-1"


def test_a_distilled_student_runs_locked_to_its_recipe_and_against_the_original(page, studio, distilled):
    label, name, schedule = distilled
    open_page(page, studio)
    page.click("#model input")
    page.get_by_role("option", name=label).click()
    page.wait_for_selector("#recipe-lock :text('few-step student')")
    assert f"trained for {schedule}" in page.inner_text("#recipe-lock")
    expect(page.locator("#schedule input")).to_have_value(schedule)
    expect(page.locator("#schedule input")).to_be_disabled()
    page.get_by_text("More settings").click()
    guidance = page.locator("#guidance textarea, #guidance input")
    expect(guidance).to_have_value("1")
    expect(guidance).to_be_disabled()
    expect(page.locator("#mode input[value=original]")).to_be_disabled()
    settle(page)

    page.fill("#prompt textarea", "a red circle moves to the right")
    page.click("#generate-btn")
    page.wait_for_selector("#gen-message :text('Queued run')")
    run_id = int(re.search(r"Queued run #(\d+)", page.inner_text("#gen-message")).group(1))
    page.wait_for_function(PLAYING, arg="#gen-videos video", timeout=120_000)
    row = studio.http.get(f"/api/runs/{run_id}").json()
    assert row["status"] == "done" and row["checkpoint_name"] == name and row["schedule"] == schedule
    assert set(row["guidance"]) == {1.0} and row["report"]["sampler"] == "few-step"
    if name == "mini-distilled":  # the shipped student's page is worth showing; the stand-in's noise is not
        screenshot(page, "generate-distilled")

    settle(page)
    page.click("#compare-btn")
    page.wait_for_selector("#gen-message :text('Queued the original')")
    ids = [int(i) for i in re.findall(r"run #(\d+)", page.inner_text("#gen-message"))]
    page.wait_for_function(PLAYING, arg="#gen-videos video", timeout=180_000)
    assert page.locator("#gen-videos video").count() == 2
    original, student = (studio.http.get(f"/api/runs/{i}").json() for i in ids)
    assert (original["mode"], original["schedule"], original["checkpoint_name"]) == ("original", "0-0-50", None)
    assert student["schedule"] == schedule and student["seed"] == original["seed"]
    assert "Speed-up against the original" in page.inner_text("#gen-card")
    page.click("#open-compare")
    page.wait_for_selector("#cmp-videos video >> nth=1")
    page.wait_for_selector("#cmp-quality :text('PSNR')")
    table = page.inner_text("#cmp-table")
    assert "0-0-50" in table and schedule in table and "TFLOPs" in table and "peak memory (MB)" in table
    if name == "mini-distilled":
        screenshot(page, "compare-distilled")

    page.get_by_role("tab", name="Generate").click()  # another model unlocks the boxes
    page.click("#model input")
    page.get_by_role("option", name="tiny (preset)").click()
    expect(page.locator("#schedule input")).to_be_enabled()
    expect(guidance).to_be_enabled()
    expect(page.locator("#recipe-lock")).to_be_hidden()


def test_admin_distils_a_teacher_and_plots_generator_and_critic_losses(page, studio):
    """Admin's job form for a distillation: the kind shows the method, teacher, plan and steps; the
    job runs on the embedded worker, its losses plot, and its student joins the model list."""
    import json

    from core.checkpoints import save_checkpoint
    from core.presets import build_components

    admin = {"Authorization": f"Bearer {ADMIN_PASSWORD}"}
    folder = studio.data_dir / "uploads" / "tiny-teacher"
    if not (folder / "card.json").is_file():
        save_checkpoint(folder, build_components("tiny", "cpu").transformer,
                        {"base": "tiny", "kind": "full", "trained_for": "pyramidal", "boundaries": [0.8, 0.5]})
        r = studio.http.post("/api/admin/checkpoints", headers=admin,
                             json={"path": str(folder), "base": "tiny", "name": "tiny-teacher"})
        assert r.status_code == 201, r.text
    open_page(page, studio)
    page.get_by_role("tab", name="Admin").click()
    page.fill("#admin-password input", ADMIN_PASSWORD)
    page.click("#admin-unlock")
    page.wait_for_selector("#admin-message :text('Admin unlocked')")
    page.get_by_text("Start a finetune job").click()
    assert not page.locator("#job-distill").is_visible()
    page.get_by_label("distillation").check()
    page.wait_for_selector("#job-distill", state="visible")
    page.wait_for_function("() => document.querySelector('#job-config').innerText.includes('batch')")
    page.fill("#job-name input, #job-name textarea", "browser-student")
    page.click("#job-base input")
    page.get_by_role("option", name="tiny").click()
    page.click("#job-teacher input")
    page.get_by_role("option", name="tiny-teacher (over tiny)").click()
    page.fill("#job-steps input", "3")
    settings = {"data": "world:2", "frames": 17, "height": 64, "width": 64, "critic_steps": 1, "batch": 1}
    page.fill("#job-config .cm-content", json.dumps(settings))
    settle(page)
    job_id = start_and_follow_job(page)
    assert "(distillation)" in page.inner_text("#job-detail")
    job = studio.http.get(f"/api/admin/jobs/{job_id}", headers=admin).json()
    assert job["config"]["kind"] == "distill" and job["config"]["method"] == "dmd-pt-star"
    assert job["config"]["steps"] == 3 and [p["step"] for p in job["losses"]] == [1, 2, 3]
    assert all(p["generator_loss"] is not None and p["critic_loss"] is not None for p in job["losses"])
    page.get_by_role("tab", name="Generate").click()
    page.click("#model input")  # the student is a model now, by its card's label
    page.get_by_role("option", name="browser-student — 2-2-1, 5 steps, guidance baked in, DMD-PT*").click()
    expect(page.locator("#schedule input")).to_be_disabled()
