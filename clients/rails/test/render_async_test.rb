# frozen_string_literal: true

require "test_helper"

# render's async: option and async_defer! through the gateway's handshake.
class RenderAsyncTest < ActionDispatch::IntegrationTest
  include Asyncreply::TestHelper

  def asyncreply_adapter_for_test
    Asyncreply::Adapters::GatewayAdapter.new
  end

  test "render async: defers only the slow report" do
    get "/reports/2", headers: GATEWAY_FIRST_ARRIVAL
    assert_response :accepted
    assert_equal "1", response.headers["Asyncreply-Defer"]
    assert_empty response.body

    get "/reports/1", headers: GATEWAY_FIRST_ARRIVAL
    assert_response :ok
    assert_equal "Weekly sales", response.parsed_body["title"]
  end

  test "the slow report renders on replay" do
    get "/reports/2", headers: { "Asyncreply-Operation" => "op-1" }

    assert_response :ok
    assert_equal "Ten years of sales", response.parsed_body["title"]
  end

  test "render async: false renders as render does" do
    get "/reports/1/page"
    rails_render = [response.status, response.media_type, response.body]

    get "/reports/1/page_async_false", headers: GATEWAY_FIRST_ARRIVAL
    assert_equal rails_render, [response.status, response.media_type, response.body]
    assert_equal "<h1>Weekly sales</h1>\n", response.body
  end

  test "render async: without a template renders the action's own" do
    get "/reports/1/summary", headers: GATEWAY_FIRST_ARRIVAL
    assert_response :ok
    assert_equal "<p>Summary of Weekly sales</p>\n", response.body

    get "/reports/2/summary", headers: GATEWAY_FIRST_ARRIVAL
    assert_response :accepted
  end

  test "render keeps Rails' other options" do
    get "/reports/1/created", headers: GATEWAY_FIRST_ARRIVAL

    assert_response :created
    assert_equal "application/json", response.media_type
  end

  test "render async: with settings sends them" do
    get "/reports/1/custom", headers: GATEWAY_FIRST_ARRIVAL

    assert_response :accepted
    assert_equal "1; timeout=60; wait=0", response.headers["Asyncreply-Defer"]
  end

  test "async_defer! defers when it can, and the action goes on when it cannot" do
    get "/reports/1/explicit", headers: GATEWAY_FIRST_ARRIVAL
    assert_response :accepted
    assert_equal "1; retention=86400", response.headers["Asyncreply-Defer"]

    get "/reports/1/explicit"
    assert_response :ok
    assert_equal "explicit Weekly sales", response.body
  end

  test "views see async_replay? and async_operation_id" do
    get "/reports/1/replay_state"
    assert_equal "false nil", response.body

    get "/reports/1/replay_state", headers: { "Asyncreply-Operation" => "op-3" }
    assert_equal "true &quot;op-3&quot;", response.body
  end
end

# What render passes on to Rails' own render, below it.
class RenderArgumentsTest < ActiveSupport::TestCase
  include Asyncreply::TestHelper

  def asyncreply_adapter_for_test
    Asyncreply::Adapters::GatewayAdapter.new
  end

  # Stands in for Rails' render: returns what it was called with.
  class RailsRendering
    def render(*args, &block)
      [args, block]
    end
  end

  class Controller < RailsRendering
    include Asyncreply::Controller

    attr_reader :request, :deferral_answer

    def initialize(headers = {})
      super()
      @request = ActionDispatch::Request.new(Rack::MockRequest.env_for("/", headers))
    end

    def head(status, headers)
      @deferral_answer = [status, headers]
      true
    end
  end

  test "calls without async: reach Rails with the same arguments" do
    options = { layout: false }
    block = proc {}

    args, passed_block = Controller.new.render("show", options, &block)

    assert_equal ["show", options], args
    assert_same options, args.last
    assert_same block, passed_block
  end

  test "async: is removed, and nothing else" do
    assert_equal [["show"], nil], Controller.new.render("show", async: false)
    assert_equal [[], nil], Controller.new.render(async: false)
    assert_equal [[{ json: 1, status: :created }], nil], Controller.new.render(json: 1, status: :created, async: true)
  end

  test "a deferred render does not reach Rails, and returns true" do
    controller = Controller.new("HTTP_ASYNCREPLY_DEFERRABLE" => "1")

    assert_equal true, controller.render("show", async: { timeout: 60 })
    assert_equal [:accepted, { "Asyncreply-Defer" => "1; timeout=60" }], controller.deferral_answer
  end

  test "an async: value that is not true, false or settings is an error" do
    assert_raises(ArgumentError) { Controller.new.render("show", async: "yes") }
  end
end
