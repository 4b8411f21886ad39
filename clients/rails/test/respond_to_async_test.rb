# frozen_string_literal: true

require "test_helper"

# respond_to_async through the gateway's handshake.
class RespondToAsyncTest < ActionDispatch::IntegrationTest
  include Asyncreply::TestHelper

  def asyncreply_adapter_for_test
    Asyncreply::Adapters::GatewayAdapter.new
  end

  test "defers the named action with the operation's settings, without running it" do
    post "/exports", params: { kind: "csv" }, headers: GATEWAY_FIRST_ARRIVAL

    assert_response :accepted
    assert_equal "1; timeout=3600; retention=604800; wait=2", response.headers["Asyncreply-Defer"]
    assert_empty response.body
  end

  test "leaves the other actions alone" do
    get "/exports", headers: GATEWAY_FIRST_ARRIVAL

    assert_response :ok
    assert_nil response.headers["Asyncreply-Defer"]
  end

  test "if: and unless: decide per request" do
    get "/archives/5", headers: GATEWAY_FIRST_ARRIVAL
    assert_response :ok
    assert_equal "archive 5", response.body

    get "/archives/500", headers: GATEWAY_FIRST_ARRIVAL
    assert_response :accepted
    assert_equal "1", response.headers["Asyncreply-Defer"]

    get "/archives/500", params: { preview: "1" }, headers: GATEWAY_FIRST_ARRIVAL
    assert_response :ok
    assert_equal "archive 500", response.body
  end

  test "without actions, defers every action" do
    get "/backups", headers: GATEWAY_FIRST_ARRIVAL
    assert_response :accepted

    get "/backups/7", headers: GATEWAY_FIRST_ARRIVAL
    assert_response :accepted
  end

  test "works in ActionController::API controllers" do
    post "/api/jobs", headers: GATEWAY_FIRST_ARRIVAL
    assert_response :accepted

    post "/api/jobs"
    assert_response :created
  end

  test "rejects options it does not know, when the controller is defined" do
    error = assert_raises(ArgumentError) do
      Class.new(ApplicationController) { respond_to_async :show, timout: 60 }
    end
    assert_match "timout", error.message

    assert_raises(ArgumentError) { Class.new(ApplicationController) { respond_to_async :show, timeout: -1 } }
  end
end
