# frozen_string_literal: true

require "rails"
require "action_controller"
require "asyncreply/rails/version"

# Asynchronous Rails endpoints behind the asyncreply gateway.
#
# An action that would be slow answers the gateway's first arrival with a
# deferral instead of doing the work; the gateway answers the client
# <tt>202 Accepted</tt> and a monitor URL, replays the recorded request to
# the application in the background, and serves the replay's response when
# it is ready. See Asyncreply::Controller for the controller methods and
# Asyncreply::Adapters for what a deferral does in each environment.
module Asyncreply
  # Added by the gateway to every first arrival it forwards: the request may
  # be deferred.
  DEFERRABLE_HEADER = "Asyncreply-Deferrable"
  # The application's answer that defers the request, with its parameters:
  # <tt>1; timeout=3600; retention=604800; wait=2</tt>.
  DEFER_HEADER = "Asyncreply-Defer"
  # The operation's ID, on the replay of a deferred request.
  OPERATION_HEADER = "Asyncreply-Operation"
  # Where the replay may POST its progress.
  PROGRESS_HEADER = "Asyncreply-Progress"

  extend ActiveSupport::Autoload

  autoload :Adapters
  autoload :Controller
  autoload :Deferral
  autoload :DeferredRequest
  autoload :TestHelper

  ADAPTER_METHODS = %i[defer progress].freeze
  private_constant :ADAPTER_METHODS

  class << self
    # The adapter every controller defers through. Defaults to the
    # <tt>:gateway</tt> adapter; the Railtie sets it from
    # <tt>config.asyncreply.adapter</tt>.
    def adapter
      @adapter ||= Adapters::GatewayAdapter.new
    end

    # Sets the adapter by name (<tt>:gateway</tt>, <tt>:inline</tt>,
    # <tt>:test</tt>) or as an object responding to +defer+ and +progress+.
    def adapter=(name_or_adapter)
      @adapter =
        case name_or_adapter
        when Symbol, String
          Adapters.lookup(name_or_adapter).new
        else
          unless ADAPTER_METHODS.all? { |method| name_or_adapter.respond_to?(method) }
            raise ArgumentError, "#{name_or_adapter.inspect} is not an asyncreply adapter: it must respond to #{ADAPTER_METHODS.join(' and ')}"
          end

          name_or_adapter
        end
    end

    # Seconds a progress report may delay the action, at most; past them the
    # action goes on and the report is dropped. Defaults to 1.
    attr_accessor :progress_timeout
  end

  self.progress_timeout = 1
end

require "asyncreply/railtie"
