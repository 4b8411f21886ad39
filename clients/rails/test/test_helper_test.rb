# frozen_string_literal: true

require "test_helper"

# Asyncreply::TestHelper with the test adapter, as an application's own
# integration tests use it.
class TestHelperTest < ActionDispatch::IntegrationTest
  include Asyncreply::TestHelper

  test "the test request gets the deferral the gateway would" do
    post "/exports", params: { kind: "csv" }

    assert_response :accepted
    assert_equal "1; timeout=3600; retention=604800; wait=2", response.headers["Asyncreply-Defer"]
    assert_empty response.body
  end

  test "records the request as the gateway would" do
    post "/session", params: { user: "alice" }
    post "/exports?draft=1", params: { kind: "csv" }.to_json,
      headers: { "Content-Type" => "application/json", "X-Trace" => "t-1" }

    deferred = assert_deferred(method: :post, path: "/exports", params: { kind: "csv", draft: "1" },
      action: "exports#create", timeout: 1.hour, retention: 604800, wait: 2)
    assert_equal "POST", deferred.request_method
    assert_equal "http://www.example.com/exports?draft=1", deferred.url
    assert_equal({ "kind" => "csv" }.to_json, deferred.body)
    assert_equal "application/json", deferred.headers["Content-Type"]
    assert_equal "t-1", deferred.headers["X-Trace"]
    assert_match "_test_app_session=", deferred.headers["Cookie"]
  end

  test "a replay runs as the same user: the recorded cookie travels" do
    post "/session", params: { user: "alice" }
    post "/exports", params: { kind: "csv" }
    deferred = assert_deferred(path: "/exports")
    post "/session", params: { user: "bob" } # the test's own session moves on

    responses = perform_deferred

    assert_equal 1, responses.size
    assert_equal 201, responses.first.status
    assert_equal({ "user" => "alice", "kind" => "csv", "replay" => true, "operation" => deferred.operation_id },
      responses.first.parsed_body)
    assert_same responses.first, deferred.response
    assert_empty deferred_requests
    assert_equal [deferred], performed_requests
  end

  test "async_replay? is false on a first arrival that runs" do
    get "/exports"

    assert_response :ok
    assert_equal false, response.parsed_body["replay"]
  end

  test "progress reported on replay is recorded" do
    post "/exports", params: { kind: "csv" }
    assert_empty performed_requests

    perform_deferred

    assert_equal [[40, "Exporting"]], performed_requests.first.progress.map(&:to_a)
    assert_progress 40, "Exporting"
    assert_progress 40, /Export/
    assert_progress 40
    assert_raises(Minitest::Assertion) { assert_progress 41 }
    assert_raises(Minitest::Assertion) { assert_progress 40, "Importing" }
  end

  test "render async: defers only the slow report, which renders on replay" do
    assert_no_deferred { get "/reports/1" }
    assert_response :ok

    assert_deferred(path: "/reports/2", action: "reports#show") { get "/reports/2" }
    assert_response :accepted

    response = perform_deferred.first
    assert_equal "Ten years of sales", response.parsed_body["title"]
  end

  test "assert_deferred fails, naming what was deferred, when nothing matches" do
    get "/backups/3"

    error = assert_raises(Minitest::Assertion) { assert_deferred path: "/backups/4" }
    assert_match "/backups/3", error.message
    assert_raises(Minitest::Assertion) { assert_deferred method: :post }
    assert_raises(Minitest::Assertion) { assert_deferred(path: "/backups/3") { get "/backups/5" } }
    assert_raises(Minitest::Assertion) { assert_no_deferred path: %r{\A/backups/} }
    assert_deferred method: :get, path: %r{\A/backups/}, params: ->(params) { params["id"] == "3" }
  end

  test "perform_deferred replays only what matches, and with a block only what the block deferred" do
    get "/backups/1"
    get "/backups/2"

    assert_equal ["backup 2"], perform_deferred(path: "/backups/2").map(&:body)
    assert_equal ["/backups/1"], deferred_requests.map(&:path)

    assert_equal ["backup 3"], perform_deferred { get "/backups/3" }.map(&:body)
    assert_equal ["/backups/1"], deferred_requests.map(&:path)

    assert_equal ["backup 1"], perform_deferred.map(&:body)
    assert_empty perform_deferred
  end

  # Minitest's hooks around a test, for running the helper's own.
  class TestLifecycle
    def before_setup; end

    def after_teardown; end
  end

  test "every test runs with a fresh test adapter, and the one before it comes back after it" do
    get "/backups/1"
    outside = Asyncreply.adapter
    other_test = Class.new(TestLifecycle) { include Asyncreply::TestHelper }.new

    other_test.before_setup
    inside = Asyncreply.adapter
    other_test.after_teardown

    assert_instance_of Asyncreply::Adapters::TestAdapter, inside
    assert_empty inside.deferred_requests
    assert_same outside, Asyncreply.adapter
    assert_equal ["/backups/1"], deferred_requests.map(&:path)
  end

  test "the replay keeps the request's body and content type" do
    post "/exports", params: { kind: "pdf" }.to_json, headers: { "Content-Type" => "application/json" }

    assert_equal "pdf", perform_deferred.first.parsed_body["kind"]
  end
end
