# frozen_string_literal: true

module Asyncreply
  module Adapters
    # The test adapter stands in for the gateway: it defers every request an
    # action asks to defer, recording it (an Asyncreply::DeferredRequest),
    # and answers the test's request with the deferral the gateway would
    # have received. Asyncreply::TestHelper asserts on the recorded requests
    # and replays them through the application.
    #
    #   Rails.application.config.asyncreply.adapter = :test
    class TestAdapter
      # The deferred requests not replayed yet.
      def deferred_requests
        @deferred_requests ||= []
      end

      # The deferred requests replayed by #perform, in order, each with its
      # response and progress reports.
      def performed_requests
        @performed_requests ||= []
      end

      def defer(request, deferral)
        deferred_requests << DeferredRequest.new(request, deferral)
        true
      end

      # Records the progress on the replayed request it belongs to.
      def progress(request, percent, message)
        operation_id = request.headers[OPERATION_HEADER]
        replayed = performed_requests.find { |deferred| deferred.operation_id == operation_id }
        replayed&.progress&.push(DeferredRequest::Progress.new(percent, message))
      end

      # Replays +deferred+ through the Rack application +app+, as the gateway
      # would, and returns the replay's response.
      def perform(deferred, app)
        deferred_requests.delete(deferred)
        performed_requests << deferred
        deferred.replay(app)
      end
    end
  end
end
