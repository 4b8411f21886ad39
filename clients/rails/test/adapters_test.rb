# frozen_string_literal: true

require "test_helper"

class GatewayAdapterTest < ActionDispatch::IntegrationTest
  include Asyncreply::TestHelper

  def asyncreply_adapter_for_test
    Asyncreply::Adapters::GatewayAdapter.new
  end

  test "without the gateway in front, the action runs inline" do
    post "/exports", params: { kind: "csv" }

    assert_response :created
    assert_equal({ "user" => nil, "kind" => "csv", "replay" => false, "operation" => nil }, response.parsed_body)
  end

  test "a first arrival through the gateway is answered with the deferral" do
    get "/reports/2", headers: GATEWAY_FIRST_ARRIVAL

    assert_response :accepted
    assert_equal "1", response.headers["Asyncreply-Defer"]
  end

  test "only the gateway's spelling makes a request deferrable" do
    post "/exports", headers: { "Asyncreply-Deferrable" => "true" }

    assert_response :created
  end

  test "a replay runs the action, knowing its operation" do
    post "/exports", params: { kind: "csv" }, headers: { "Asyncreply-Operation" => "op-7" }

    assert_response :created
    assert_equal true, response.parsed_body["replay"]
    assert_equal "op-7", response.parsed_body["operation"]
  end

  test "a replay is never deferred again" do
    post "/exports", headers: GATEWAY_FIRST_ARRIVAL.merge("Asyncreply-Operation" => "op-7")

    assert_response :created
  end
end

class InlineAdapterTest < ActionDispatch::IntegrationTest
  include Asyncreply::TestHelper

  def asyncreply_adapter_for_test
    Asyncreply::Adapters::InlineAdapter.new
  end

  test "runs the action even when the request is deferrable" do
    post "/exports", params: { kind: "csv" }, headers: GATEWAY_FIRST_ARRIVAL
    assert_response :created
    assert_equal false, response.parsed_body["replay"]

    get "/reports/2", headers: GATEWAY_FIRST_ARRIVAL
    assert_response :ok
    assert_equal "Ten years of sales", response.parsed_body["title"]
  end
end

class AdapterConfigurationTest < ActiveSupport::TestCase
  setup { @adapter = Asyncreply.adapter }
  teardown { Asyncreply.adapter = @adapter }

  test "the application's environment chose the test adapter" do
    assert_instance_of Asyncreply::Adapters::TestAdapter, Asyncreply.adapter
  end

  test "each environment's default adapter" do
    { "test" => :test, "development" => :inline, "production" => :gateway, "staging" => :gateway }.each do |env, adapter|
      assert_equal adapter, Asyncreply::Railtie.default_adapter(ActiveSupport::EnvironmentInquirer.new(env)), env
    end
  end

  test "adapters are set by name or as objects" do
    Asyncreply.adapter = :inline
    assert_instance_of Asyncreply::Adapters::InlineAdapter, Asyncreply.adapter

    Asyncreply.adapter = "gateway"
    assert_instance_of Asyncreply::Adapters::GatewayAdapter, Asyncreply.adapter

    custom = Asyncreply::Adapters::TestAdapter.new
    Asyncreply.adapter = custom
    assert_same custom, Asyncreply.adapter
  end

  test "an unknown name or an object that is no adapter is refused" do
    assert_raises(ArgumentError) { Asyncreply.adapter = :sidekiq }
    assert_raises(ArgumentError) { Asyncreply.adapter = Object.new }
  end
end
