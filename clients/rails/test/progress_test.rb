# frozen_string_literal: true

require "test_helper"
require "socket"
require "webrick"

# async_progress with the gateway adapter, against a real HTTP server in the
# place of the gateway's progress URL.
class ProgressTest < ActionDispatch::IntegrationTest
  include Asyncreply::TestHelper

  # An HTTP server on a free local port that answers every progress POST
  # with +status+ and keeps what it received.
  class ProgressServer
    Received = Struct.new(:content_type, :body)

    attr_reader :received

    def initialize(status: 204)
      @received = Queue.new
      @server = WEBrick::HTTPServer.new(BindAddress: "127.0.0.1", Port: 0,
        Logger: WEBrick::Log.new(File::NULL), AccessLog: [])
      @server.mount_proc("/progress") do |request, response|
        @received << Received.new(request.content_type, JSON.parse(request.body))
        response.status = status
      end
      @thread = Thread.new { @server.start }
    end

    def url
      "http://127.0.0.1:#{@server.config[:Port]}/progress"
    end

    def close
      @server.shutdown
      @thread.join
    end
  end

  def asyncreply_adapter_for_test
    Asyncreply::Adapters::GatewayAdapter.new
  end

  setup { @progress_timeout = Asyncreply.progress_timeout }
  teardown { Asyncreply.progress_timeout = @progress_timeout }

  def replay_headers(progress_url)
    { "Asyncreply-Operation" => "op-1", "Asyncreply-Progress" => progress_url }
  end

  test "progress reaches the progress URL during the replay" do
    # Long enough that a busy machine never abandons the report; a quick
    # server answers well before.
    Asyncreply.progress_timeout = 30
    server = ProgressServer.new

    post "/exports", headers: replay_headers(server.url)

    assert_response :created
    assert_equal 1, server.received.size
    received = server.received.pop
    assert_equal "application/json", received.content_type
    assert_equal({ "percent" => 40, "message" => "Exporting" }, received.body)
  ensure
    server&.close
  end

  test "outside a replay, progress is not sent, even to a progress URL" do
    Asyncreply.progress_timeout = 30
    server = ProgressServer.new

    post "/exports", headers: { "Asyncreply-Progress" => server.url }
    assert_response :created
    post "/exports", headers: replay_headers(server.url)
    assert_response :created

    assert_equal 1, server.received.size
  ensure
    server&.close
  end

  test "the progress URL's errors do not reach the action" do
    Asyncreply.progress_timeout = 30
    server = ProgressServer.new(status: 410)

    post "/exports", headers: replay_headers(server.url)

    assert_response :created
    assert_equal 1, server.received.size
  ensure
    server&.close
  end

  test "an unreachable or invalid progress URL does not reach the action" do
    closed = TCPServer.new("127.0.0.1", 0)
    closed_url = "http://127.0.0.1:#{closed.addr[1]}/progress"
    closed.close

    [closed_url, "not a url", "ftp://127.0.0.1/progress"].each do |url|
      post "/exports", headers: replay_headers(url)
      assert_response :created, url
    end
  end

  test "a progress URL that never answers holds the action no longer than the timeout" do
    Asyncreply.progress_timeout = 0.2
    silent = TCPServer.new("127.0.0.1", 0) # accepts connections, never answers

    started = Process.clock_gettime(Process::CLOCK_MONOTONIC)
    post "/exports", headers: replay_headers("http://127.0.0.1:#{silent.addr[1]}/progress")
    elapsed = Process.clock_gettime(Process::CLOCK_MONOTONIC) - started

    assert_response :created
    # Net::HTTP alone would wait 60 s for the answer.
    assert_operator elapsed, :<, 5, "the action waited #{elapsed.round(2)} s for its progress report"
  ensure
    silent&.close
  end
end

# async_progress's own arguments, through an adapter that records them.
class ProgressArgumentsTest < ActionDispatch::IntegrationTest
  include Asyncreply::TestHelper

  class RecordingAdapter < Asyncreply::Adapters::GatewayAdapter
    attr_reader :reports

    def progress(_request, percent, message)
      (@reports ||= []) << [percent, message]
    end
  end

  def asyncreply_adapter_for_test
    RecordingAdapter.new
  end

  test "percent is rounded and clamped to 0-100, message is optional" do
    reports = [{ percent: -5 }, { percent: 150, message: "Over" }, { percent: 33.6, message: "Rounded" }]
    post "/progress_reports", params: { reports: reports }.to_json,
      headers: { "Content-Type" => "application/json", "Asyncreply-Operation" => "op-1" }

    assert_response :no_content
    assert_equal [[0, nil], [100, "Over"], [34, "Rounded"]], Asyncreply.adapter.reports
  end
end
