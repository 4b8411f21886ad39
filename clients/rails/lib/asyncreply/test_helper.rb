# frozen_string_literal: true

module Asyncreply
  # Assertions and replays for asynchronous endpoints, in the manner of
  # ActiveJob::TestHelper, for ActionDispatch::IntegrationTest:
  #
  #   class ExportsTest < ActionDispatch::IntegrationTest
  #     include Asyncreply::TestHelper
  #
  #     test "an export runs later, as the same user" do
  #       sign_in users(:alice)
  #       post exports_path, params: { kind: "csv" }
  #       assert_response :accepted
  #       assert_deferred method: :post, path: exports_path
  #
  #       response = perform_deferred.first
  #       assert_equal "alice", response.parsed_body["user"]
  #       assert_progress 50, "Halfway"
  #     end
  #   end
  #
  # Each test runs with a fresh adapter from #asyncreply_adapter_for_test,
  # the test adapter unless overridden.
  module TestHelper
    def before_setup # :nodoc:
      @asyncreply_adapter_outside_test = Asyncreply.adapter
      Asyncreply.adapter = asyncreply_adapter_for_test
      super
    end

    def after_teardown # :nodoc:
      super
      Asyncreply.adapter = @asyncreply_adapter_outside_test
    end

    # The adapter the test runs with: a new Adapters::TestAdapter. Override
    # it to run a test class with another adapter.
    def asyncreply_adapter_for_test
      Adapters::TestAdapter.new
    end

    # The deferred requests not replayed yet (Asyncreply::DeferredRequest).
    def deferred_requests
      Asyncreply.adapter.deferred_requests
    end

    # The requests #perform_deferred replayed, with their responses and
    # progress reports.
    def performed_requests
      Asyncreply.adapter.performed_requests
    end

    # Asserts that a request matching +matchers+ was deferred and not
    # replayed yet, and returns it; with a block, one deferred by the block.
    # The matchers are those of DeferredRequest#matches?: +method+, +path+,
    # +params+, +action+, +timeout+, +retention+, +wait+.
    #
    #   assert_deferred method: :post, path: "/exports", params: { kind: "csv" }
    #   assert_deferred(path: %r{\A/reports/}) { get report_path(report) }
    def assert_deferred(**matchers, &block)
      candidates = deferred_by(&block)
      deferred = candidates.find { |candidate| candidate.matches?(**matchers) }

      message = +"No deferred request found with #{matchers.inspect}"
      message << "\n\nDeferred requests:\n#{candidates.join("\n")}" if candidates.any?
      assert deferred, message
      deferred
    end

    # Asserts that no request matching +matchers+ was deferred (by the
    # block, when given).
    #
    #   assert_no_deferred { get report_path(quick_report) }
    def assert_no_deferred(**matchers, &block)
      deferred = deferred_by(&block).select { |candidate| candidate.matches?(**matchers) }
      assert deferred.empty?, "Expected no deferred request with #{matchers.inspect}, found:\n#{deferred.join("\n")}"
    end

    # Replays the deferred requests matching +matchers+ (those deferred by
    # the block, when given) through the application, as the gateway
    # would: same method, URL, headers, cookies and body, with
    # Asyncreply-Operation and Asyncreply-Progress. Returns their responses
    # (ActionDispatch::TestResponse), in order; the requests move to
    # #performed_requests.
    #
    #   response = perform_deferred(path: "/exports").first
    #   assert_equal 201, response.status
    def perform_deferred(**matchers, &block)
      app = respond_to?(:app) ? self.app : ::Rails.application
      deferred_by(&block)
        .select { |deferred| deferred.matches?(**matchers) }
        .map { |deferred| Asyncreply.adapter.perform(deferred, app) }
    end

    # Asserts that a replay reported +percent+, with +message+ when given
    # (a String or a Regexp), and returns the report.
    #
    #   assert_progress 40, "Rendering"
    def assert_progress(percent, message = nil)
      reports = performed_requests.flat_map(&:progress)
      report = reports.find { |candidate| candidate.percent == percent && (message.nil? || message === candidate.message) }

      assert report, "No progress #{percent}% #{message.inspect} reported; reported: #{reports.map { |r| [r.percent, r.message] }.inspect}"
      report
    end

    private
      # The deferred requests not replayed yet, or, with a block, those the
      # block deferred.
      def deferred_by
        return deferred_requests.dup unless block_given?

        before = deferred_requests.dup
        yield
        deferred_requests - before
      end
  end
end
