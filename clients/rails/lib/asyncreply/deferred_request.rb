# frozen_string_literal: true

require "securerandom"
require "rack/mock"
require "action_dispatch/testing/test_response"

module Asyncreply
  # A request the test adapter deferred, recorded as the gateway records it:
  # method, URL, headers (cookies included) and body, from which it can be
  # replayed. After the replay it holds the response and the progress
  # reported meanwhile.
  class DeferredRequest
    # One progress report: +percent+ from 0 to 100, +message+ or nil.
    Progress = Struct.new(:percent, :message)

    # The operation's ID, sent on replay in Asyncreply-Operation.
    attr_reader :operation_id
    # "GET", "POST"…
    attr_reader :request_method
    # The full URL, and its path without the query string.
    attr_reader :url, :path
    # The request's parameters (path, query and body), with string keys,
    # without +controller+ and +action+.
    attr_reader :params
    # The raw request body.
    attr_reader :body
    # The controller and action that deferred it: "reports#show".
    attr_reader :action
    # The Asyncreply::Deferral the action asked for.
    attr_reader :deferral
    # The replay's ActionDispatch::TestResponse, nil until replayed.
    attr_reader :response
    # The Progress reports of the replay, in order.
    attr_reader :progress

    delegate :timeout, :retention, :wait, to: :deferral

    def initialize(request, deferral)
      @operation_id = SecureRandom.uuid
      @request_method = request.request_method
      @url = request.url
      @path = request.path
      @params = request.parameters.except(:controller, :action).to_hash
      @body = request.raw_post.to_s
      @action = request.path_parameters.values_at(:controller, :action).join("#")
      @deferral = deferral
      @header_env = recorded_header_env(request.env)
      @progress = []
    end

    # The recorded request headers, by their HTTP names:
    # <tt>headers["Cookie"]</tt>.
    def headers
      ActionDispatch::Http::Headers.from_hash(@header_env.dup)
    end

    # The URL the replay carries in Asyncreply-Progress. The test adapter
    # records the replay's progress itself: nothing listens there.
    def progress_url
      "http://asyncreply.test/operations/#{operation_id}/progress"
    end

    # Replays the request through the Rack application +app+ with the replay
    # headers, and returns the response.
    def replay(app)
      env = @header_env.dup
      replay_headers = ActionDispatch::Http::Headers.from_hash(env)
      replay_headers[OPERATION_HEADER] = operation_id
      replay_headers[PROGRESS_HEADER] = progress_url

      replayed = Rack::MockRequest.new(app).request(request_method, url, env.merge(input: body))
      @response = ActionDispatch::TestResponse.from_response(replayed)
    end

    # Whether the request matches every matcher given. Each is compared with
    # <tt>===</tt>, so it may be a value, a Regexp or a lambda; +method+ may
    # be a Symbol (<tt>:post</tt>), +params+ a Hash with symbol keys.
    def matches?(method: nil, path: nil, params: nil, action: nil, timeout: nil, retention: nil, wait: nil)
      expected = {
        request_method: method.respond_to?(:upcase) ? method.to_s.upcase : method,
        path: path,
        params: params.is_a?(Hash) ? params.deep_stringify_keys : params,
        action: action,
        timeout: timeout,
        retention: retention,
        wait: wait,
      }.compact
      expected.all? { |attribute, matcher| matcher === public_send(attribute) }
    end

    def inspect
      "#<#{self.class.name} #{request_method} #{path} #{action} params=#{params.inspect} #{deferral.header_value}>"
    end
    alias_method :to_s, :inspect

    private
      # The request's headers as Rack has them (HTTP_*, CONTENT_TYPE), less
      # the Asyncreply-* ones, which the gateway strips from every request it
      # receives, and Content-Length, which the replay's body sets.
      def recorded_header_env(env)
        env.select do |name, _|
          (name.start_with?("HTTP_") && !name.start_with?("HTTP_ASYNCREPLY_")) || name == "CONTENT_TYPE"
        end
      end
  end
end
