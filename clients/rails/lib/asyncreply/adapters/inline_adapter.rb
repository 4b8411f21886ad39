# frozen_string_literal: true

module Asyncreply
  module Adapters
    # The development adapter: never defers, so every action simply runs,
    # with the same code and URLs as in production, gateway or not.
    #
    #   Rails.application.config.asyncreply.adapter = :inline
    class InlineAdapter
      def defer(_request, _deferral)
        false
      end

      # Nothing is ever replayed, so there is nobody to report progress to.
      def progress(_request, _percent, _message); end
    end
  end
end
